//! PURE: the simulated WhatsApp servers and phones, as plain data and functions of time.
//!
//! [`Sim`] keeps the page connections, the linked devices, the messages devices sent and the
//! inbound messages waiting for an offline device. Every method takes the current time in
//! milliseconds and returns nothing that needs I/O: what must reach a page is queued as
//! [`Effect`]s that the websocket layer drains after each call, and `dirty` says that the
//! linked devices changed and the state file should be written. Randomness (QR refs, ids,
//! tokens, pairing codes) comes from a seeded RNG so tests are reproducible.
//!
//! This module does not know about websockets, HTTP or files.

use std::collections::{BTreeMap, VecDeque};

use base64::Engine as _;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::versions::{VersionError, WebVersions, valid_version};

/// Identifies one websocket connection of a page.
pub type ConnId = u64;

/// Longest text a message may carry, in bytes.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Largest media payload a page may send inline, in decoded bytes.
pub const MAX_MEDIA_BYTES: usize = 16 * 1024 * 1024;
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

// === wire messages ===

/// Key material a page generated for its profile (the QR string's parts 2 to 5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceKeys {
    /// Base64 of the noise static public key (32 bytes).
    pub noise: String,
    /// Base64 of the identity public key (32 bytes).
    pub identity: String,
    /// Base64 of the ADV secret (32 bytes).
    pub adv: String,
    /// The platform token (`WEB`).
    pub platform: String,
}

/// Credentials a linked page stored in its IndexedDB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Creds {
    /// The device id the server gave at link time.
    pub device: String,
    /// The secret token given at link time.
    pub token: String,
}

/// An outbound message as the page sends it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutMsg {
    /// Serialized key `true_<to>_<id>`.
    pub id: String,
    /// Recipient wid, `<digits>@c.us` or a group `…@g.us`.
    pub to: String,
    /// `chat` or a media type.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Text of a `chat` message.
    #[serde(default)]
    pub body: Option<String>,
    /// Caption of a media message.
    #[serde(default)]
    pub caption: Option<String>,
    /// Media type.
    #[serde(default)]
    pub mimetype: Option<String>,
    /// Media file name.
    #[serde(default)]
    pub filename: Option<String>,
    /// Media bytes, base64.
    #[serde(default)]
    pub data: Option<String>,
    /// Media size when the bytes are not sent.
    #[serde(default)]
    pub size: Option<u64>,
    /// Base64 SHA-256 of the media when the bytes are not sent.
    #[serde(default)]
    pub filehash: Option<String>,
}

/// What a page sends over the websocket.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ClientMsg {
    /// First message: the profile's keys and, when linked, its credentials.
    Hello {
        /// Key material.
        keys: DeviceKeys,
        /// Stored credentials.
        #[serde(default)]
        creds: Option<Creds>,
        /// The web version the page booted (`Debug.VERSION`); absent means the live one.
        #[serde(default)]
        version: Option<String>,
    },
    /// `Cmd.refreshQR()`.
    RefreshQr,
    /// `startAltLinkingFlow(phone)`.
    PairCodeRequest {
        /// Correlates the answer.
        req: u64,
        /// The phone the code is for.
        phone: String,
    },
    /// `addAndSendMsgToChat`.
    Send {
        /// The message.
        msg: OutMsg,
    },
    /// `Socket.logout()`.
    Logout,
    /// `Socket.takeover()`.
    Takeover,
}

/// What the server sends to a page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ServerMsg {
    /// A new QR ref to show.
    Qr {
        /// The ref.
        #[serde(rename = "ref")]
        reference: String,
        /// A new ADV secret (base64 of 32 bytes), with the first ref of each batch: WhatsApp
        /// rotates the secret whenever a new batch of refs arrives.
        #[serde(skip_serializing_if = "Option::is_none")]
        adv: Option<String>,
    },
    /// No scan after the last rotation: `UNPAIRED_IDLE`.
    Idle,
    /// Stored credentials accepted.
    Connected {
        /// `<phone>@c.us`.
        wid: String,
        /// The phone's push name.
        pushname: String,
        /// The phone's platform.
        platform: String,
        /// How long the offline delivery takes before the page is synced.
        sync_ms: u64,
    },
    /// The phone linked this page: store these credentials.
    Paired {
        /// Device id.
        device: String,
        /// Secret token.
        token: String,
        /// `<phone>@c.us`.
        wid: String,
        /// Push name.
        pushname: String,
        /// The phone's platform.
        platform: String,
        /// How long the offline delivery takes before the page is synced.
        sync_ms: u64,
    },
    /// The device is not (or no longer) linked.
    LoggedOut {
        /// `unlinked`, `logout` or `unknown_device`.
        reason: String,
    },
    /// The same credentials are active in another browser.
    Conflict,
    /// The page's web version is retired: `DEPRECATED_VERSION`, no linking, no reconnect.
    Deprecated {
        /// The retired version.
        version: String,
    },
    /// Answer to a pairing-code request.
    PairCode {
        /// The request.
        req: u64,
        /// Eight characters, no dash.
        code: String,
    },
    /// A pairing-code request was refused.
    PairCodeError {
        /// The request.
        req: u64,
        /// Why.
        message: String,
    },
    /// An outbound message was refused.
    SendError {
        /// Serialized id.
        id: String,
        /// Why.
        message: String,
    },
    /// The ack of an outbound message moved.
    Ack {
        /// Serialized id.
        id: String,
        /// 1 server, 2 device, 3 read.
        ack: u8,
    },
    /// An inbound message.
    Msg {
        /// The key id (the page builds `false_<from>@c.us_<id>`).
        id: String,
        /// Sender digits.
        from: String,
        /// Text.
        body: String,
        /// Seconds since the epoch.
        ts: u64,
    },
    /// Fault: wreck the renderer.
    Crash {
        /// `hang` or `oom`.
        mode: String,
    },
    /// A protocol error (bad message).
    Error {
        /// Why.
        message: String,
    },
}

/// Work for the websocket layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Send this to that connection.
    Send(ConnId, ServerMsg),
    /// Close that connection.
    Close(ConnId),
}

// === views and errors ===

/// Media recorded for a sent message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaInfo {
    /// Media type.
    pub mimetype: String,
    /// File name, if any.
    pub filename: Option<String>,
    /// Size in bytes, if known.
    pub size: Option<u64>,
    /// Hex SHA-256, if known.
    pub sha256: Option<String>,
}

/// A message a linked device sent, as `/sim/messages` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentView {
    /// Serialized id.
    pub id: String,
    /// Recipient digits (or the whole wid for groups).
    pub to: String,
    /// Text or caption.
    pub text: Option<String>,
    /// Media, for media messages.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub media: Option<MediaInfo>,
    /// Current ack.
    pub ack: u8,
    /// When the server received it, ms since the epoch.
    pub timestamp: u64,
}

/// One row of `/sim/devices`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceView {
    /// Connection id before linking, device id after.
    pub device: String,
    /// The linked phone.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub phone: Option<String>,
    /// The page's state as the server sees it.
    pub state: String,
    /// Whether a page is connected.
    pub online: bool,
    /// The QR ref shown.
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none", default)]
    pub reference: Option<String>,
    /// The full five-part QR string shown.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub qr: Option<String>,
    /// The pairing code shown.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pairing_code: Option<String>,
    /// When it was linked, ms since the epoch.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub linked_at: Option<u64>,
    /// The web version the page booted (`Debug.VERSION`), while online.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub version: Option<String>,
}

/// Result of a successful link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Linked {
    /// Device id.
    pub device: String,
    /// Phone digits.
    pub phone: String,
    /// `<phone>@c.us`.
    pub wid: String,
}

/// Why a phone action failed; each maps to one HTTP status in the control API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    /// Malformed input (400).
    #[error("{1}")]
    Invalid(&'static str, String),
    /// Nothing matches (404).
    #[error("{1}")]
    NotFound(&'static str, String),
    /// Matches something that is no longer usable (409).
    #[error("{1}")]
    Conflict(&'static str, String),
}

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

#[derive(Debug, Clone)]
struct Inbound {
    id: String,
    from: String,
    body: String,
    ts: u64,
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
    /// Inbound messages for phones with no connected device.
    inbox: BTreeMap<String, VecDeque<Inbound>>,
    /// Phones whose reconnects are refused until the given time.
    refusals: BTreeMap<String, u64>,
    effects: Vec<Effect>,
    dirty: bool,
    web: WebVersions,
    /// The `sync_delay_ms` fault, overriding `timing.sync_ms` while set.
    sync_override: Option<u64>,
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
            refusals: BTreeMap::new(),
            effects: Vec::new(),
            dirty: false,
            web: WebVersions::default(),
            sync_override: None,
        }
    }

    /// Restores linked devices from a state file's content.
    pub fn restore(&mut self, state: Persisted) {
        for d in state.devices {
            if valid_phone(&d.phone) {
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
            },
        );
        id
    }

    /// A page's websocket closed.
    pub fn disconnect(&mut self, conn: ConnId) {
        self.conns.remove(&conn);
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
            ClientMsg::Logout => self.logout(conn),
            ClientMsg::Takeover => self.takeover(conn),
        }
    }

    /// A protocol error from a page (unparseable message).
    pub fn protocol_error(&mut self, conn: ConnId, message: String) {
        self.effects
            .push(Effect::Send(conn, ServerMsg::Error { message }));
    }

    fn hello(
        &mut self,
        conn: ConnId,
        keys: DeviceKeys,
        creds: Option<Creds>,
        version: Option<String>,
        now: u64,
    ) {
        if let Err(message) = validate_keys(&keys) {
            self.protocol_error(conn, message);
            self.effects.push(Effect::Close(conn));
            return;
        }
        if version.as_deref().is_some_and(|v| !valid_version(v)) {
            self.protocol_error(conn, "version must look like 2.3000.1012345678-sim".into());
            self.effects.push(Effect::Close(conn));
            return;
        }
        let version = version.unwrap_or_else(|| self.web.live.clone());
        if let Some(c) = self.conns.get_mut(&conn) {
            c.keys = Some(keys);
            c.version = Some(version.clone());
        }
        if self.web.is_retired(&version) {
            // What WhatsApp's servers do with a too-old client: no QR, no login.
            self.deprecate(conn);
            return;
        }
        let Some(creds) = creds else {
            self.start_qr(conn, now);
            return;
        };
        let device = self.devices.get(&creds.device).cloned();
        match device {
            Some(d) if d.token_sha256 == sha256_hex(creds.token.as_bytes()) => {
                if self
                    .refusals
                    .get(&d.phone)
                    .is_some_and(|&until| now < until)
                {
                    self.effects.push(Effect::Close(conn));
                    return;
                }
                self.refusals.remove(&d.phone);
                // Another browser with the same credentials loses the session, as on WhatsApp.
                let others: Vec<ConnId> = self
                    .conns
                    .iter()
                    .filter(|(id, c)| {
                        **id != conn
                            && c.phase == Phase::Connected
                            && c.device.as_deref() == Some(d.device.as_str())
                    })
                    .map(|(id, _)| *id)
                    .collect();
                for o in others {
                    if let Some(c) = self.conns.get_mut(&o) {
                        c.phase = Phase::Conflict;
                    }
                    self.effects.push(Effect::Send(o, ServerMsg::Conflict));
                }
                self.activate(conn, &d);
            }
            _ => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.phase = Phase::New;
                }
                self.effects.push(Effect::Send(
                    conn,
                    ServerMsg::LoggedOut {
                        reason: "unknown_device".into(),
                    },
                ));
            }
        }
    }

    /// Makes `conn` the connected page of device `d` and brings it up to date.
    fn activate(&mut self, conn: ConnId, d: &Device) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.phase = Phase::Connected;
            c.device = Some(d.device.clone());
            c.reference = None;
            c.pairing = None;
            c.next_rotation_at = u64::MAX;
        }
        self.effects.push(Effect::Send(
            conn,
            ServerMsg::Connected {
                wid: wid_of(&d.phone),
                pushname: d.pushname.clone(),
                platform: PHONE_PLATFORM.into(),
                sync_ms: self.sync_ms(),
            },
        ));
        self.after_connect(conn, d);
    }

    /// Pushes acks that moved while offline and the queued inbound messages.
    fn after_connect(&mut self, conn: ConnId, d: &Device) {
        if let Some(list) = self.sent.get(&d.phone) {
            for s in list.iter().filter(|s| s.device == d.device) {
                self.effects.push(Effect::Send(
                    conn,
                    ServerMsg::Ack {
                        id: s.view.id.clone(),
                        ack: s.view.ack,
                    },
                ));
            }
        }
        if let Some(q) = self.inbox.remove(&d.phone) {
            for m in q {
                self.effects.push(Effect::Send(
                    conn,
                    ServerMsg::Msg {
                        id: m.id,
                        from: m.from,
                        body: m.body,
                        ts: m.ts,
                    },
                ));
            }
        }
    }

    /// A new batch of refs, with a new ADV secret (what WhatsApp's `pair-device` does).
    fn start_qr(&mut self, conn: ConnId, now: u64) {
        let reference = self.new_ref();
        let adv = base64::engine::general_purpose::STANDARD.encode(self.rng.random::<[u8; 32]>());
        let first = self.timing.qr_first_ms;
        if let Some(c) = self.conns.get_mut(&conn) {
            if let Some(old) = c.reference.replace(reference.clone()) {
                push_old_ref(&mut c.old_refs, old);
            }
            if let Some(k) = c.keys.as_mut() {
                let old = std::mem::replace(&mut k.adv, adv.clone());
                c.old_advs.push_back(old);
                while c.old_advs.len() > OLD_ADVS_KEPT {
                    c.old_advs.pop_front();
                }
            }
            c.phase = Phase::Unpaired;
            c.rotations = 0;
            c.next_rotation_at = now.saturating_add(first);
        }
        self.effects.push(Effect::Send(
            conn,
            ServerMsg::Qr {
                reference,
                adv: Some(adv),
            },
        ));
    }

    /// Fault: every page waiting to be linked gets a new batch of refs and a new ADV secret.
    /// Returns how many.
    pub fn rotate_adv_secrets(&mut self, now: u64) -> usize {
        let ids: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.phase, Phase::Unpaired | Phase::Idle))
            .map(|(id, _)| *id)
            .collect();
        for &id in &ids {
            self.start_qr(id, now);
        }
        ids.len()
    }

    /// The `sync_delay_ms` fault (None: back to the configured delay).
    pub fn set_sync_delay_override(&mut self, ms: Option<u64>) {
        self.sync_override = ms;
    }

    /// The `sync_delay_ms` fault, if set.
    pub fn sync_delay_override(&self) -> Option<u64> {
        self.sync_override
    }

    fn sync_ms(&self) -> u64 {
        self.sync_override.unwrap_or(self.timing.sync_ms)
    }

    fn refresh_qr(&mut self, conn: ConnId, now: u64) {
        let phase = self.conns.get(&conn).map(|c| c.phase);
        if matches!(phase, Some(Phase::Unpaired | Phase::Idle)) {
            self.start_qr(conn, now);
        }
    }

    fn pair_code_request(&mut self, conn: ConnId, req: u64, phone: String) {
        let phase = self.conns.get(&conn).map(|c| c.phase);
        if !matches!(phase, Some(Phase::Unpaired | Phase::Idle)) {
            self.effects.push(Effect::Send(
                conn,
                ServerMsg::PairCodeError {
                    req,
                    message: "the device is not waiting to be linked".into(),
                },
            ));
            return;
        }
        if !valid_phone(&phone) {
            self.effects.push(Effect::Send(
                conn,
                ServerMsg::PairCodeError {
                    req,
                    message: "phone must be 5 to 20 digits".into(),
                },
            ));
            return;
        }
        let code: String = (0..8)
            .map(|_| CODE_ALPHABET[self.rng.random_range(0..CODE_ALPHABET.len())] as char)
            .collect();
        if let Some(c) = self.conns.get_mut(&conn) {
            c.pairing = Some((phone, code.clone()));
        }
        self.effects
            .push(Effect::Send(conn, ServerMsg::PairCode { req, code }));
    }

    fn send(&mut self, conn: ConnId, msg: OutMsg, now: u64) {
        let device = match self.conns.get(&conn) {
            Some(c) if c.phase == Phase::Connected => c.device.clone(),
            _ => None,
        };
        let Some(device) = device.and_then(|d| self.devices.get(&d).cloned()) else {
            self.effects.push(Effect::Send(
                conn,
                ServerMsg::SendError {
                    id: msg.id,
                    message: "not connected".into(),
                },
            ));
            return;
        };
        let view = match validate_out(&msg, now) {
            Ok(v) => v,
            Err(message) => {
                self.effects.push(Effect::Send(
                    conn,
                    ServerMsg::SendError {
                        id: msg.id,
                        message,
                    },
                ));
                return;
            }
        };
        let list = self.sent.entry(device.phone.clone()).or_default();
        // A page resends what it has not seen acked after a reconnect: keep the first copy.
        let ack = match list.iter().find(|s| s.view.id == view.id) {
            Some(existing) => existing.view.ack,
            None => {
                list.push_back(Sent {
                    view: view.clone(),
                    device: device.device.clone(),
                    next_ack_at: now.saturating_add(self.timing.ack_device_ms),
                });
                if list.len() > MAX_SENT_PER_PHONE {
                    list.pop_front();
                }
                1
            }
        };
        self.effects
            .push(Effect::Send(conn, ServerMsg::Ack { id: view.id, ack }));
    }

    fn logout(&mut self, conn: ConnId) {
        let device = self
            .conns
            .get(&conn)
            .filter(|c| c.phase == Phase::Connected)
            .and_then(|c| c.device.clone());
        match device {
            Some(d) => self.unlink_device(&d, "logout"),
            None => self.effects.push(Effect::Send(
                conn,
                ServerMsg::LoggedOut {
                    reason: "logout".into(),
                },
            )),
        }
    }

    fn takeover(&mut self, conn: ConnId) {
        let device = self
            .conns
            .get(&conn)
            .filter(|c| c.phase == Phase::Conflict)
            .and_then(|c| c.device.clone())
            .and_then(|d| self.devices.get(&d).cloned());
        let Some(d) = device else { return };
        let others: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(id, c)| {
                **id != conn
                    && c.phase == Phase::Connected
                    && c.device.as_deref() == Some(d.device.as_str())
            })
            .map(|(id, _)| *id)
            .collect();
        for o in others {
            if let Some(c) = self.conns.get_mut(&o) {
                c.phase = Phase::Conflict;
            }
            self.effects.push(Effect::Send(o, ServerMsg::Conflict));
        }
        self.activate(conn, &d);
    }

    fn unlink_device(&mut self, device: &str, reason: &str) {
        self.devices.remove(device);
        self.dirty = true;
        let conns: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.device.as_deref() == Some(device))
            .map(|(id, _)| *id)
            .collect();
        for id in conns {
            if let Some(c) = self.conns.get_mut(&id) {
                c.phase = Phase::New;
                c.device = None;
            }
            self.effects.push(Effect::Send(
                id,
                ServerMsg::LoggedOut {
                    reason: reason.into(),
                },
            ));
        }
    }

    // --- timers ---

    /// Advances QR rotations and acks that are due at `now`.
    pub fn tick(&mut self, now: u64) {
        let due: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.phase == Phase::Unpaired && now >= c.next_rotation_at)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let rotations = self.conns.get(&id).map_or(0, |c| c.rotations);
            if rotations >= self.timing.qr_max_rotations {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.phase = Phase::Idle;
                    c.next_rotation_at = u64::MAX;
                    if let Some(old) = c.reference.take() {
                        push_old_ref(&mut c.old_refs, old.clone());
                        // The page keeps showing the dead ref, as WhatsApp Web does.
                        c.reference = Some(old);
                    }
                }
                self.effects.push(Effect::Send(id, ServerMsg::Idle));
            } else {
                let reference = self.new_ref();
                let next = self.timing.qr_next_ms;
                if let Some(c) = self.conns.get_mut(&id) {
                    if let Some(old) = c.reference.replace(reference.clone()) {
                        push_old_ref(&mut c.old_refs, old);
                    }
                    c.rotations += 1;
                    c.next_rotation_at = now.saturating_add(next);
                }
                self.effects.push(Effect::Send(
                    id,
                    ServerMsg::Qr {
                        reference,
                        adv: None,
                    },
                ));
            }
        }

        let mut acks: Vec<(String, String, u8)> = Vec::new();
        for list in self.sent.values_mut() {
            // Every message waits the same delays, so the unfinished ones are always the newest:
            // walk back from the end and stop at the first one already read.
            for s in list.iter_mut().rev() {
                if s.view.ack >= 3 {
                    break;
                }
                if now >= s.next_ack_at {
                    s.view.ack += 1;
                    s.next_ack_at = now.saturating_add(self.timing.ack_read_ms);
                    acks.push((s.device.clone(), s.view.id.clone(), s.view.ack));
                }
            }
        }
        for (device, id, ack) in acks {
            for conn in self.online_conns_of_device(&device) {
                self.effects.push(Effect::Send(
                    conn,
                    ServerMsg::Ack {
                        id: id.clone(),
                        ack,
                    },
                ));
            }
        }
    }

    // --- phone side (control API) ---

    /// `/sim/link`: the phone scanned a QR string.
    pub fn link_qr(
        &mut self,
        qr: &str,
        phone: &str,
        name: Option<&str>,
        now: u64,
    ) -> Result<Linked, PhoneError> {
        check_phone(phone)?;
        let conn = self.check_qr(qr)?;
        Ok(self.link(conn, phone, name, now))
    }

    /// Checks a QR string the way the phone does before linking (`/sim/link` with `dry_run`):
    /// five parts, or six with WhatsApp's help link last; a ref some page shows now; that page's
    /// key material, including its *current* ADV secret. Returns the page's connection.
    pub fn check_qr(&self, qr: &str) -> Result<ConnId, PhoneError> {
        let parts: Vec<&str> = qr.trim().split(',').collect();
        let shape_ok = match parts.len() {
            5 => true,
            6 => parts[5] == QR_SIXTH_PART,
            _ => false,
        };
        if !shape_ok || parts.iter().any(|p| p.is_empty()) {
            return Err(PhoneError::Invalid(
                "invalid_qr",
                format!(
                    "a QR string has five non-empty comma-separated parts, or six with {QR_SIXTH_PART} last"
                ),
            ));
        }
        let found = self
            .conns
            .iter()
            .find(|(_, c)| c.phase == Phase::Unpaired && c.reference.as_deref() == Some(parts[0]));
        let Some((&conn, c)) = found else {
            let expired = self.conns.values().any(|c| {
                c.old_refs.iter().any(|r| r == parts[0])
                    || (c.phase == Phase::Idle && c.reference.as_deref() == Some(parts[0]))
            });
            return Err(if expired {
                PhoneError::Conflict("qr_expired", "this QR ref has expired".into())
            } else {
                PhoneError::NotFound("unknown_qr", "no page shows this QR ref".into())
            });
        };
        let Some(k) = c.keys.as_ref() else {
            return Err(PhoneError::Invalid(
                "invalid_qr",
                "the page showing this ref sent no key material".into(),
            ));
        };
        if !(k.noise == parts[1] && k.identity == parts[2] && k.platform == parts[4]) {
            return Err(PhoneError::Invalid(
                "invalid_qr",
                "the key material does not match the page showing this ref".into(),
            ));
        }
        if k.adv != parts[3] {
            return Err(if c.old_advs.iter().any(|a| a == parts[3]) {
                PhoneError::Conflict(
                    "stale_adv_secret",
                    "the QR carries an ADV secret that was rotated since: build the QR again \
                     from the current getADVSecretKey()"
                        .into(),
                )
            } else {
                PhoneError::Invalid(
                    "invalid_qr",
                    "the ADV secret does not match the page showing this ref".into(),
                )
            });
        }
        Ok(conn)
    }

    /// `/sim/pair`: the phone typed a pairing code.
    pub fn pair(
        &mut self,
        phone: &str,
        code: &str,
        name: Option<&str>,
        now: u64,
    ) -> Result<Linked, PhoneError> {
        check_phone(phone)?;
        let code: String = code
            .chars()
            .filter(|c| *c != '-')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        if code.len() != 8 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(PhoneError::Invalid(
                "invalid_code",
                "a pairing code is 8 letters or digits, optionally as XXXX-XXXX".into(),
            ));
        }
        let found = self.conns.iter().find(|(_, c)| {
            matches!(c.phase, Phase::Unpaired | Phase::Idle)
                && c.pairing
                    .as_ref()
                    .is_some_and(|(p, k)| p == phone && *k == code)
        });
        let Some((&conn, _)) = found else {
            return Err(PhoneError::NotFound(
                "unknown_code",
                "no page shows this pairing code for this phone".into(),
            ));
        };
        Ok(self.link(conn, phone, name, now))
    }

    fn link(&mut self, conn: ConnId, phone: &str, name: Option<&str>, now: u64) -> Linked {
        let device = hex::encode(self.rng.random::<[u8; 8]>());
        let token = hex::encode(self.rng.random::<[u8; 32]>());
        let noise = self
            .conns
            .get(&conn)
            .and_then(|c| c.keys.as_ref())
            .map(|k| k.noise.clone())
            .unwrap_or_default();
        let pushname = name
            .map(str::to_owned)
            .unwrap_or_else(|| format!("Sim {phone}"));
        let d = Device {
            device: device.clone(),
            phone: phone.to_owned(),
            token_sha256: sha256_hex(token.as_bytes()),
            pushname: pushname.clone(),
            noise,
            linked_at: now,
        };
        self.devices.insert(device.clone(), d.clone());
        self.dirty = true;
        if let Some(c) = self.conns.get_mut(&conn) {
            if let Some(old) = c.reference.take() {
                push_old_ref(&mut c.old_refs, old);
            }
            c.phase = Phase::Connected;
            c.device = Some(device.clone());
            c.pairing = None;
            c.next_rotation_at = u64::MAX;
        }
        self.effects.push(Effect::Send(
            conn,
            ServerMsg::Paired {
                device: device.clone(),
                token,
                wid: wid_of(phone),
                pushname,
                platform: PHONE_PLATFORM.into(),
                sync_ms: self.sync_ms(),
            },
        ));
        self.after_connect(conn, &d);
        Linked {
            device,
            phone: phone.to_owned(),
            wid: wid_of(phone),
        }
    }

    /// `/sim/inbound`: a contact writes to a linked phone. Returns the serialized id.
    pub fn inbound(
        &mut self,
        to: &str,
        from: &str,
        text: &str,
        now: u64,
    ) -> Result<String, PhoneError> {
        check_phone(to)?;
        if !valid_phone(from) {
            return Err(PhoneError::Invalid(
                "invalid_phone",
                "from must be 5 to 20 digits".into(),
            ));
        }
        if text.len() > MAX_TEXT_BYTES {
            return Err(PhoneError::Invalid(
                "text_too_long",
                format!("text is limited to {MAX_TEXT_BYTES} bytes"),
            ));
        }
        if !self.devices.values().any(|d| d.phone == to) {
            return Err(PhoneError::NotFound(
                "unknown_phone",
                "no device is linked to this phone".into(),
            ));
        }
        let key = self.new_msg_id();
        let m = Inbound {
            id: key.clone(),
            from: from.to_owned(),
            body: text.to_owned(),
            ts: now / 1000,
        };
        let conns = self.online_conns_of_phone(to);
        if conns.is_empty() {
            let q = self.inbox.entry(to.to_owned()).or_default();
            if q.len() >= MAX_INBOX_PER_PHONE {
                return Err(PhoneError::Conflict(
                    "inbox_full",
                    format!("{MAX_INBOX_PER_PHONE} messages already wait for this offline phone"),
                ));
            }
            q.push_back(m);
        } else {
            for conn in conns {
                self.effects.push(Effect::Send(
                    conn,
                    ServerMsg::Msg {
                        id: m.id.clone(),
                        from: m.from.clone(),
                        body: m.body.clone(),
                        ts: m.ts,
                    },
                ));
            }
        }
        Ok(format!("false_{}_{}", wid_of(from), key))
    }

    /// `/sim/messages`: what the devices of a phone sent, oldest first.
    pub fn messages(&self, phone: &str) -> Result<Vec<SentView>, PhoneError> {
        check_phone(phone)?;
        Ok(self
            .sent
            .get(phone)
            .map(|l| l.iter().map(|s| s.view.clone()).collect())
            .unwrap_or_default())
    }

    /// `/sim/unlink`: the phone logs its devices out. Returns how many.
    pub fn unlink(&mut self, phone: &str) -> Result<usize, PhoneError> {
        check_phone(phone)?;
        let ids: Vec<String> = self
            .devices
            .values()
            .filter(|d| d.phone == phone)
            .map(|d| d.device.clone())
            .collect();
        if ids.is_empty() {
            return Err(PhoneError::NotFound(
                "unknown_phone",
                "no device is linked to this phone".into(),
            ));
        }
        for id in &ids {
            self.unlink_device(id, "unlinked");
        }
        Ok(ids.len())
    }

    /// Fault: close the sockets of a phone's devices, refusing reconnects for `refuse_ms`.
    pub fn drop_socket(
        &mut self,
        phone: &str,
        refuse_ms: u64,
        now: u64,
    ) -> Result<usize, PhoneError> {
        check_phone(phone)?;
        let conns = self.online_conns_of_phone(phone);
        if conns.is_empty() {
            return Err(PhoneError::NotFound(
                "not_online",
                "no device of this phone is online".into(),
            ));
        }
        if refuse_ms > 0 {
            self.refusals
                .insert(phone.to_owned(), now.saturating_add(refuse_ms));
        }
        for &c in &conns {
            self.effects.push(Effect::Close(c));
        }
        Ok(conns.len())
    }

    /// Fault: tell a phone's pages to wreck their renderer.
    pub fn crash(&mut self, phone: &str, mode: &str) -> Result<usize, PhoneError> {
        check_phone(phone)?;
        if mode != "hang" && mode != "oom" {
            return Err(PhoneError::Invalid(
                "invalid_mode",
                "mode is \"hang\" or \"oom\"".into(),
            ));
        }
        let conns = self.online_conns_of_phone(phone);
        if conns.is_empty() {
            return Err(PhoneError::NotFound(
                "not_online",
                "no device of this phone is online".into(),
            ));
        }
        for &c in &conns {
            self.effects.push(Effect::Send(
                c,
                ServerMsg::Crash {
                    mode: mode.to_owned(),
                },
            ));
        }
        Ok(conns.len())
    }

    /// The web versions (`GET /sim/web-version`).
    pub fn web_versions(&self) -> &WebVersions {
        &self.web
    }

    /// `POST /sim/web-version`: a new live version and/or retirements. Pages running a version
    /// that is now retired are turned away at once (linked or not).
    pub fn set_web_versions(
        &mut self,
        live: Option<&str>,
        retire: &[String],
    ) -> Result<WebVersions, VersionError> {
        if self.web.apply(live, retire)? {
            self.dirty = true;
            let hit: Vec<ConnId> = self
                .conns
                .iter()
                .filter(|(_, c)| {
                    c.phase != Phase::Deprecated
                        && c.version.as_deref().is_some_and(|v| self.web.is_retired(v))
                })
                .map(|(id, _)| *id)
                .collect();
            for id in hit {
                self.deprecate(id);
            }
        }
        Ok(self.web.clone())
    }

    fn deprecate(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.phase = Phase::Deprecated;
        c.next_rotation_at = u64::MAX;
        c.pairing = None;
        if let Some(old) = c.reference.take() {
            push_old_ref(&mut c.old_refs, old);
        }
        let version = c.version.clone().unwrap_or_default();
        self.effects
            .push(Effect::Send(conn, ServerMsg::Deprecated { version }));
        self.effects.push(Effect::Close(conn));
    }

    /// Removes every refusal.
    pub fn clear_refusals(&mut self) {
        self.refusals.clear();
    }

    /// `/sim/devices`: connections and linked devices.
    pub fn devices(&self) -> Vec<DeviceView> {
        let mut out = Vec::new();
        for (id, c) in &self.conns {
            let linked = c.device.as_ref().and_then(|d| self.devices.get(d));
            let state = match c.phase {
                Phase::New => "OPENING",
                Phase::Unpaired => "UNPAIRED",
                Phase::Idle => "UNPAIRED_IDLE",
                Phase::Connected => "CONNECTED",
                Phase::Conflict => "CONFLICT",
                Phase::Deprecated => "DEPRECATED_VERSION",
            };
            let showing = matches!(c.phase, Phase::Unpaired | Phase::Idle);
            let qr = match (&c.reference, &c.keys) {
                (Some(r), Some(k)) if c.phase == Phase::Unpaired => Some(format!(
                    "{r},{},{},{},{}",
                    k.noise, k.identity, k.adv, k.platform
                )),
                _ => None,
            };
            out.push(DeviceView {
                device: linked.map_or_else(|| format!("conn-{id}"), |d| d.device.clone()),
                phone: linked.map(|d| d.phone.clone()),
                state: state.into(),
                online: true,
                reference: if showing { c.reference.clone() } else { None },
                qr,
                pairing_code: if showing {
                    c.pairing.as_ref().map(|(_, k)| k.clone())
                } else {
                    None
                },
                linked_at: linked.map(|d| d.linked_at),
                version: c.version.clone(),
            });
        }
        for d in self.devices.values() {
            if self.online_conns_of_device(&d.device).is_empty()
                && !self
                    .conns
                    .values()
                    .any(|c| c.device.as_deref() == Some(d.device.as_str()))
            {
                out.push(DeviceView {
                    device: d.device.clone(),
                    phone: Some(d.phone.clone()),
                    state: "OFFLINE".into(),
                    online: false,
                    reference: None,
                    qr: None,
                    pairing_code: None,
                    linked_at: Some(d.linked_at),
                    version: None,
                });
            }
        }
        out
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

// === validation ===

/// Whether `s` is a phone number as the simulator accepts it: 5 to 20 ASCII digits.
pub fn valid_phone(s: &str) -> bool {
    (5..=20).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

fn check_phone(s: &str) -> Result<(), PhoneError> {
    if valid_phone(s) {
        Ok(())
    } else {
        Err(PhoneError::Invalid(
            "invalid_phone",
            "phone must be 5 to 20 digits".into(),
        ))
    }
}

fn wid_of(phone: &str) -> String {
    format!("{phone}@c.us")
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn b64_32(s: &str) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .is_ok_and(|b| b.len() == 32)
}

fn validate_keys(k: &DeviceKeys) -> Result<(), String> {
    if !(b64_32(&k.noise) && b64_32(&k.identity) && b64_32(&k.adv)) {
        return Err("keys must be base64 of 32 bytes each".into());
    }
    if k.platform.is_empty()
        || k.platform.len() > 16
        || !k.platform.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err("platform must be 1 to 16 letters or digits".into());
    }
    Ok(())
}

/// Checks a recipient wid and returns what `/sim/messages` shows as `to`.
fn recipient(to: &str) -> Option<String> {
    let (user, server) = to.split_once('@')?;
    match server {
        "c.us" if valid_phone(user) => Some(user.to_owned()),
        "g.us"
            if (5..=40).contains(&user.len())
                && user.bytes().all(|b| b.is_ascii_digit() || b == b'-') =>
        {
            Some(to.to_owned())
        }
        _ => None,
    }
}

fn validate_out(m: &OutMsg, now: u64) -> Result<SentView, String> {
    let to = recipient(&m.to).ok_or("to must be <digits>@c.us or a group wid")?;
    let prefix = format!("true_{}_", m.to);
    let key =
        m.id.strip_prefix(&prefix)
            .ok_or("id must be true_<to>_<key id>")?;
    if key.is_empty() || key.len() > 64 || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err("the key id must be 1 to 64 letters or digits".into());
    }
    let kind = if m.kind.is_empty() { "chat" } else { &m.kind };
    let text = if kind == "chat" {
        m.body.clone()
    } else {
        m.caption.clone().or_else(|| m.body.clone())
    };
    if text.as_ref().is_some_and(|t| t.len() > MAX_TEXT_BYTES) {
        return Err(format!("text is limited to {MAX_TEXT_BYTES} bytes"));
    }
    let media = match kind {
        "chat" => {
            if text.is_none() {
                return Err("a chat message needs a body".into());
            }
            None
        }
        "image" | "video" | "audio" | "ptt" | "document" | "sticker" => Some(media_of(m)?),
        other => return Err(format!("unsupported message type {other:?}")),
    };
    Ok(SentView {
        id: m.id.clone(),
        to,
        text,
        media,
        ack: 1,
        timestamp: now,
    })
}

fn media_of(m: &OutMsg) -> Result<MediaInfo, String> {
    let mimetype = m
        .mimetype
        .clone()
        .filter(|t| !t.is_empty() && t.len() <= 255 && t.contains('/'))
        .ok_or("a media message needs a mimetype like image/png")?;
    if m.filename.as_ref().is_some_and(|f| f.len() > 255) {
        return Err("filename is limited to 255 bytes".into());
    }
    let (size, sha256) = match &m.data {
        Some(data) => {
            // Allow a data: URL prefix as a convenience; the bytes are what count.
            let b64 = data.rsplit_once(',').map_or(data.as_str(), |(_, b)| b);
            if b64.len() > MAX_MEDIA_BYTES / 3 * 4 + 4 {
                return Err(format!("media is limited to {MAX_MEDIA_BYTES} bytes"));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| "data must be base64")?;
            (Some(bytes.len() as u64), Some(sha256_hex(&bytes)))
        }
        None => {
            let sha = match &m.filehash {
                Some(h) => {
                    let b = base64::engine::general_purpose::STANDARD
                        .decode(h)
                        .map_err(|_| "filehash must be base64")?;
                    if b.len() != 32 {
                        return Err("filehash must be a base64 SHA-256".into());
                    }
                    Some(hex::encode(b))
                }
                None => None,
            };
            if m.size.is_none() {
                return Err("a media message needs data or size".into());
            }
            (m.size, sha)
        }
    };
    Ok(MediaInfo {
        mimetype,
        filename: m.filename.clone(),
        size,
        sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(seed: u8) -> DeviceKeys {
        let b = |x: u8| base64::engine::general_purpose::STANDARD.encode([x; 32]);
        DeviceKeys {
            noise: b(seed),
            identity: b(seed.wrapping_add(1)),
            adv: b(seed.wrapping_add(2)),
            platform: "WEB".into(),
        }
    }

    fn timing() -> Timing {
        Timing {
            qr_first_ms: 60_000,
            qr_next_ms: 20_000,
            qr_max_rotations: 2,
            ack_device_ms: 100,
            ack_read_ms: 200,
            sync_ms: 0,
        }
    }

    fn qr_of(sim: &Sim, conn: ConnId) -> String {
        let c = &sim.conns[&conn];
        let k = c.keys.as_ref().unwrap();
        format!(
            "{},{},{},{},{}",
            c.reference.as_ref().unwrap(),
            k.noise,
            k.identity,
            k.adv,
            k.platform
        )
    }

    fn fresh(sim: &mut Sim, seed: u8, now: u64) -> ConnId {
        let c = sim.connect();
        sim.handle(
            c,
            ClientMsg::Hello {
                keys: keys(seed),
                creds: None,
                version: None,
            },
            now,
        );
        c
    }

    fn token_of(effects: &[Effect]) -> Creds {
        effects
            .iter()
            .find_map(|e| match e {
                Effect::Send(_, ServerMsg::Paired { device, token, .. }) => Some(Creds {
                    device: device.clone(),
                    token: token.clone(),
                }),
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn qr_rotates_after_first_period_then_every_next_and_goes_idle() {
        let mut sim = Sim::new(timing(), 1);
        let c = fresh(&mut sim, 1, 0);
        let first = sim.conns[&c].reference.clone().unwrap();
        sim.take_effects();
        sim.tick(59_999);
        assert!(sim.take_effects().is_empty());
        sim.tick(60_000);
        let second = sim.conns[&c].reference.clone().unwrap();
        assert_ne!(first, second);
        assert!(matches!(
            sim.take_effects()[..],
            [Effect::Send(_, ServerMsg::Qr { .. })]
        ));
        sim.tick(79_999);
        assert!(sim.take_effects().is_empty());
        sim.tick(80_000);
        assert!(matches!(
            sim.take_effects()[..],
            [Effect::Send(_, ServerMsg::Qr { .. })]
        ));
        sim.tick(100_000);
        assert_eq!(sim.take_effects(), vec![Effect::Send(c, ServerMsg::Idle)]);
        assert_eq!(sim.devices()[0].state, "UNPAIRED_IDLE");
        // An idle ref cannot be linked; refreshQR starts over.
        let dead = qr_of(&sim, c);
        assert!(matches!(
            sim.link_qr(&dead, "4915550001", None, 100_001),
            Err(PhoneError::Conflict("qr_expired", _))
        ));
        sim.handle(c, ClientMsg::RefreshQr, 100_002);
        assert_eq!(sim.devices()[0].state, "UNPAIRED");
        let fresh_qr = qr_of(&sim, c);
        assert!(sim.link_qr(&fresh_qr, "4915550001", None, 100_003).is_ok());
    }

    #[test]
    fn retired_versions_are_turned_away_linked_or_not() {
        let mut sim = Sim::new(timing(), 21);
        let old = sim.web_versions().live.clone();
        let c = fresh(&mut sim, 3, 0);
        let qr = qr_of(&sim, c);
        sim.take_effects();
        let w = sim
            .set_web_versions(Some("2.3000.2-sim"), std::slice::from_ref(&old))
            .unwrap();
        assert_eq!(
            (w.live.as_str(), w.retired.clone()),
            ("2.3000.2-sim", vec![old.clone()])
        );
        assert!(sim.take_dirty());
        // The page showing a QR on the old build is told so and closed; its QR is dead.
        assert_eq!(
            sim.take_effects(),
            vec![
                Effect::Send(
                    c,
                    ServerMsg::Deprecated {
                        version: old.clone()
                    }
                ),
                Effect::Close(c)
            ]
        );
        assert_eq!(sim.devices()[0].state, "DEPRECATED_VERSION");
        assert!(sim.link_qr(&qr, "4915550001", None, 1).is_err());
        // A page booted from a cached old index.html later: no QR either.
        let c2 = sim.connect();
        sim.handle(
            c2,
            ClientMsg::Hello {
                keys: keys(4),
                creds: None,
                version: Some(old.clone()),
            },
            2,
        );
        assert!(matches!(
            sim.take_effects()[..],
            [
                Effect::Send(_, ServerMsg::Deprecated { .. }),
                Effect::Close(_)
            ]
        ));
        // The live build still links, and the versions survive a restart.
        let c3 = sim.connect();
        sim.handle(
            c3,
            ClientMsg::Hello {
                keys: keys(5),
                creds: None,
                version: Some("2.3000.2-sim".into()),
            },
            3,
        );
        let qr3 = qr_of(&sim, c3);
        assert!(sim.link_qr(&qr3, "4915550001", None, 4).is_ok());
        let mut again = Sim::new(timing(), 22);
        again.restore(sim.snapshot());
        assert_eq!(again.web_versions(), sim.web_versions());
        // A malformed version is a protocol error.
        let c4 = sim.connect();
        sim.take_effects();
        sim.handle(
            c4,
            ClientMsg::Hello {
                keys: keys(6),
                creds: None,
                version: Some("<script>".into()),
            },
            5,
        );
        assert!(matches!(
            sim.take_effects()[..],
            [Effect::Send(_, ServerMsg::Error { .. }), Effect::Close(_)]
        ));
    }

    #[test]
    fn link_checks_every_part_and_tells_expired_from_unknown() {
        let mut sim = Sim::new(timing(), 2);
        let c = fresh(&mut sim, 7, 0);
        let qr = qr_of(&sim, c);
        let tampered = qr.replace(",WEB", ",IOS");
        assert!(matches!(
            sim.link_qr(&tampered, "4915550001", None, 1),
            Err(PhoneError::Invalid("invalid_qr", _))
        ));
        assert!(matches!(
            sim.link_qr("a,b,c", "4915550001", None, 1),
            Err(PhoneError::Invalid("invalid_qr", _))
        ));
        assert!(matches!(
            sim.link_qr("2@nope,a,b,c,d", "4915550001", None, 1),
            Err(PhoneError::NotFound("unknown_qr", _))
        ));
        assert!(matches!(
            sim.link_qr(&qr, "12ab", None, 1),
            Err(PhoneError::Invalid("invalid_phone", _))
        ));
        sim.tick(60_000);
        assert!(matches!(
            sim.link_qr(&qr, "4915550001", None, 60_001),
            Err(PhoneError::Conflict("qr_expired", _))
        ));
        let qr2 = qr_of(&sim, c);
        let linked = sim.link_qr(&qr2, "4915550001", None, 60_002).unwrap();
        assert_eq!(linked.wid, "4915550001@c.us");
        assert!(sim.take_dirty());
        assert_eq!(sim.devices()[0].state, "CONNECTED");
    }

    #[test]
    fn stored_credentials_reconnect_until_the_phone_unlinks() {
        let mut sim = Sim::new(timing(), 3);
        let c = fresh(&mut sim, 1, 0);
        let qr = qr_of(&sim, c);
        sim.link_qr(&qr, "4915550001", Some("Ann"), 1).unwrap();
        let creds = token_of(&sim.take_effects());
        sim.disconnect(c);
        assert_eq!(sim.devices()[0].state, "OFFLINE");

        // A restarted browser, and a restarted simulator restored from the snapshot.
        let mut sim2 = Sim::new(timing(), 4);
        sim2.restore(sim.snapshot());
        let c2 = sim2.connect();
        sim2.handle(
            c2,
            ClientMsg::Hello {
                keys: keys(1),
                creds: Some(creds.clone()),
                version: None,
            },
            10,
        );
        assert_eq!(
            sim2.take_effects(),
            vec![Effect::Send(
                c2,
                ServerMsg::Connected {
                    wid: "4915550001@c.us".into(),
                    pushname: "Ann".into(),
                    platform: PHONE_PLATFORM.into(),
                    sync_ms: 0,
                }
            )]
        );
        // A wrong token is refused.
        let c3 = sim2.connect();
        let mut bad = creds.clone();
        bad.token = "00".into();
        sim2.handle(
            c3,
            ClientMsg::Hello {
                keys: keys(1),
                creds: Some(bad),
                version: None,
            },
            11,
        );
        assert!(matches!(
            sim2.take_effects()[..],
            [Effect::Send(_, ServerMsg::LoggedOut { .. })]
        ));
        assert_eq!(sim2.unlink("4915550001"), Ok(1));
        assert_eq!(
            sim2.take_effects(),
            vec![Effect::Send(
                c2,
                ServerMsg::LoggedOut {
                    reason: "unlinked".into()
                }
            )]
        );
        assert!(sim2.snapshot().devices.is_empty());
        assert!(matches!(
            sim2.unlink("4915550001"),
            Err(PhoneError::NotFound(..))
        ));
    }

    #[test]
    fn second_browser_with_same_credentials_puts_first_in_conflict() {
        let mut sim = Sim::new(timing(), 5);
        let c = fresh(&mut sim, 1, 0);
        let qr = qr_of(&sim, c);
        sim.link_qr(&qr, "4915550001", None, 1).unwrap();
        let creds = token_of(&sim.take_effects());
        let c2 = sim.connect();
        sim.handle(
            c2,
            ClientMsg::Hello {
                keys: keys(1),
                creds: Some(creds),
                version: None,
            },
            2,
        );
        let eff = sim.take_effects();
        assert!(eff.contains(&Effect::Send(c, ServerMsg::Conflict)));
        sim.handle(c, ClientMsg::Takeover, 3);
        let eff = sim.take_effects();
        assert!(eff.contains(&Effect::Send(c2, ServerMsg::Conflict)));
    }

    #[test]
    fn pairing_code_links_only_for_the_requested_phone() {
        let mut sim = Sim::new(timing(), 6);
        let c = fresh(&mut sim, 1, 0);
        sim.take_effects();
        sim.handle(
            c,
            ClientMsg::PairCodeRequest {
                req: 9,
                phone: "4915550002".into(),
            },
            1,
        );
        let code = match &sim.take_effects()[..] {
            [Effect::Send(_, ServerMsg::PairCode { req: 9, code })] => code.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(code.len(), 8);
        let dashed = format!("{}-{}", &code[..4], code[4..].to_lowercase());
        assert!(matches!(
            sim.pair("4915550003", &dashed, None, 2),
            Err(PhoneError::NotFound("unknown_code", _))
        ));
        assert!(matches!(
            sim.pair("4915550002", "ABC", None, 2),
            Err(PhoneError::Invalid("invalid_code", _))
        ));
        assert_eq!(
            sim.pair("4915550002", &dashed, None, 2).unwrap().phone,
            "4915550002"
        );
    }

    #[test]
    fn sent_messages_are_recorded_and_acks_advance_to_read() {
        let mut sim = Sim::new(timing(), 7);
        let c = fresh(&mut sim, 1, 0);
        let qr = qr_of(&sim, c);
        sim.link_qr(&qr, "4915550001", None, 1).unwrap();
        sim.take_effects();
        let msg = OutMsg {
            id: "true_4915550009@c.us_3EB0AA".into(),
            to: "4915550009@c.us".into(),
            kind: "chat".into(),
            body: Some("hi".into()),
            ..OutMsg::default()
        };
        sim.handle(c, ClientMsg::Send { msg: msg.clone() }, 1000);
        assert_eq!(
            sim.take_effects(),
            vec![Effect::Send(
                c,
                ServerMsg::Ack {
                    id: msg.id.clone(),
                    ack: 1
                }
            )]
        );
        // Resending the same id does not duplicate it.
        sim.handle(c, ClientMsg::Send { msg: msg.clone() }, 1001);
        sim.take_effects();
        sim.tick(1100);
        sim.tick(1299);
        sim.tick(1300);
        let acks: Vec<u8> = sim
            .take_effects()
            .into_iter()
            .filter_map(|e| match e {
                Effect::Send(_, ServerMsg::Ack { ack, .. }) => Some(ack),
                _ => None,
            })
            .collect();
        assert_eq!(acks, vec![2, 3]);
        let list = sim.messages("4915550001").unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].to, "4915550009");
        assert_eq!(list[0].ack, 3);
        assert_eq!(list[0].text.as_deref(), Some("hi"));

        // Media with bytes: size and hash come from the bytes.
        let media = OutMsg {
            id: "true_4915550009@c.us_3EB0BB".into(),
            to: "4915550009@c.us".into(),
            kind: "document".into(),
            mimetype: Some("application/pdf".into()),
            filename: Some("a.pdf".into()),
            data: Some(base64::engine::general_purpose::STANDARD.encode(b"abc")),
            ..OutMsg::default()
        };
        sim.handle(c, ClientMsg::Send { msg: media }, 2000);
        let list = sim.messages("4915550001").unwrap();
        let m = list[1].media.clone().unwrap();
        assert_eq!(m.size, Some(3));
        assert_eq!(
            m.sha256.as_deref(),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );

        // Bad messages are refused with a reason.
        for bad in [
            OutMsg {
                id: "true_x@c.us_1".into(),
                to: "x@c.us".into(),
                body: Some("a".into()),
                ..OutMsg::default()
            },
            OutMsg {
                id: "false_4915550009@c.us_1".into(),
                to: "4915550009@c.us".into(),
                body: Some("a".into()),
                ..OutMsg::default()
            },
            OutMsg {
                id: "true_4915550009@c.us_1".into(),
                to: "4915550009@c.us".into(),
                kind: "image".into(),
                ..OutMsg::default()
            },
        ] {
            sim.take_effects();
            sim.handle(c, ClientMsg::Send { msg: bad }, 3000);
            assert!(matches!(
                sim.take_effects()[..],
                [Effect::Send(_, ServerMsg::SendError { .. })]
            ));
        }
    }

    #[test]
    fn inbound_is_queued_while_offline_and_delivered_on_connect() {
        let mut sim = Sim::new(timing(), 8);
        let c = fresh(&mut sim, 1, 0);
        let qr = qr_of(&sim, c);
        sim.link_qr(&qr, "4915550001", None, 1).unwrap();
        let creds = token_of(&sim.take_effects());
        assert!(matches!(
            sim.inbound("4915550002", "4915550009", "x", 2),
            Err(PhoneError::NotFound("unknown_phone", _))
        ));
        let id = sim.inbound("4915550001", "4915550009", "hello", 2).unwrap();
        assert!(id.starts_with("false_4915550009@c.us_3EB0"));
        assert!(matches!(
            sim.take_effects()[..],
            [Effect::Send(_, ServerMsg::Msg { .. })]
        ));
        sim.disconnect(c);
        sim.inbound("4915550001", "4915550009", "later", 3).unwrap();
        assert!(sim.take_effects().is_empty());
        let c2 = sim.connect();
        sim.handle(
            c2,
            ClientMsg::Hello {
                keys: keys(1),
                creds: Some(creds),
                version: None,
            },
            4,
        );
        let eff = sim.take_effects();
        assert!(eff.iter().any(|e| matches!(e,
            Effect::Send(_, ServerMsg::Msg { body, .. }) if body == "later")));
    }

    #[test]
    fn drop_socket_refuses_reconnects_for_a_while() {
        let mut sim = Sim::new(timing(), 9);
        let c = fresh(&mut sim, 1, 0);
        let qr = qr_of(&sim, c);
        sim.link_qr(&qr, "4915550001", None, 1).unwrap();
        let creds = token_of(&sim.take_effects());
        assert_eq!(sim.drop_socket("4915550001", 1000, 10), Ok(1));
        assert_eq!(sim.take_effects(), vec![Effect::Close(c)]);
        sim.disconnect(c);
        let hello = |sim: &mut Sim, now| {
            let c = sim.connect();
            sim.handle(
                c,
                ClientMsg::Hello {
                    keys: keys(1),
                    creds: Some(creds.clone()),
                    version: None,
                },
                now,
            );
            (c, sim.take_effects())
        };
        let (c2, eff) = hello(&mut sim, 500);
        assert_eq!(eff, vec![Effect::Close(c2)]);
        sim.disconnect(c2);
        let (_, eff) = hello(&mut sim, 1010);
        assert!(matches!(
            eff[..],
            [Effect::Send(_, ServerMsg::Connected { .. })]
        ));
        assert!(matches!(
            sim.crash("4915550001", "boom"),
            Err(PhoneError::Invalid(..))
        ));
        assert_eq!(sim.crash("4915550001", "hang"), Ok(1));
    }

    proptest::proptest! {
        /// Whatever pages and phones do, in any order and with any input, the core never
        /// panics, only addresses connections it knows, and persists only valid phones.
        #[test]
        fn never_panics_and_keeps_its_invariants(ops in proptest::collection::vec(op(), 1..60)) {
            let mut sim = Sim::new(timing(), 42);
            let mut now = 0u64;
            let mut conns: Vec<ConnId> = Vec::new();
            for o in ops {
                now += 37;
                let pick = |i: usize, conns: &Vec<ConnId>| conns.get(i % conns.len().max(1)).copied();
                match o {
                    Op::Connect => conns.push(sim.connect()),
                    Op::Disconnect(i) => {
                        if let Some(c) = pick(i, &conns) {
                            sim.disconnect(c);
                            conns.retain(|x| *x != c);
                        }
                    }
                    Op::Msg(i, m) => if let Some(c) = pick(i, &conns) { sim.handle(c, m, now) },
                    Op::LinkShown(i, phone) => {
                        if let Some(q) = sim.devices().get(i % 4).and_then(|d| d.qr.clone()) {
                            let _ = sim.link_qr(&q, &phone, None, now);
                        }
                    }
                    Op::Link(qr, phone) => { let _ = sim.link_qr(&qr, &phone, None, now); }
                    Op::Pair(phone, code) => { let _ = sim.pair(&phone, &code, None, now); }
                    Op::Inbound(to, from, text) => { let _ = sim.inbound(&to, &from, &text, now); }
                    Op::Unlink(phone) => { let _ = sim.unlink(&phone); }
                    Op::Drop(phone, ms) => { let _ = sim.drop_socket(&phone, ms, now); }
                    Op::Crash(phone, mode) => { let _ = sim.crash(&phone, &mode); }
                    Op::Tick(ms) => { now += ms; sim.tick(now); }
                }
                let _ = sim.messages("4915550001");
                for e in sim.take_effects() {
                    let id = match e { Effect::Send(id, _) | Effect::Close(id) => id };
                    proptest::prop_assert!(conns.contains(&id), "effect for unknown conn {id}");
                }
                for d in sim.snapshot().devices {
                    proptest::prop_assert!(valid_phone(&d.phone));
                }
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Connect,
        Disconnect(usize),
        Msg(usize, ClientMsg),
        LinkShown(usize, String),
        Link(String, String),
        Pair(String, String),
        Inbound(String, String, String),
        Unlink(String),
        Drop(String, u64),
        Crash(String, String),
        Tick(u64),
    }

    fn phone() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            Just("4915550001".to_owned()),
            Just("4915550002".to_owned()),
            "[0-9a-z@,-]{0,24}",
        ]
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        let keys = prop_oneof![
            Just(keys(1)),
            Just(keys(9)),
            ("[A-Za-z0-9+/=]{0,50}").prop_map(|s| {
                let mut k = keys(3);
                k.noise = s;
                k
            })
        ];
        let creds = proptest::option::of(
            ("[0-9a-f]{0,16}", "[0-9a-f]{0,64}")
                .prop_map(|(device, token)| Creds { device, token }),
        );
        let out = (
            "[a-z0-9_@.]{0,40}",
            "[a-z0-9@.]{0,20}",
            "[a-z]{0,8}",
            proptest::option::of(".{0,10}"),
            proptest::option::of("[A-Za-z0-9+/=]{0,12}"),
            proptest::option::of(0u64..1 << 40),
        )
            .prop_map(|(id, to, kind, body, data, size)| OutMsg {
                id,
                to,
                kind,
                body,
                data,
                size,
                mimetype: Some("image/png".into()),
                ..OutMsg::default()
            });
        let msg = prop_oneof![
            (keys, creds).prop_map(|(keys, creds)| ClientMsg::Hello {
                keys,
                creds,
                version: None
            }),
            Just(ClientMsg::RefreshQr),
            (any::<u64>(), phone())
                .prop_map(|(req, phone)| ClientMsg::PairCodeRequest { req, phone }),
            out.prop_map(|msg| ClientMsg::Send { msg }),
            Just(ClientMsg::Logout),
            Just(ClientMsg::Takeover),
        ];
        prop_oneof![
            Just(Op::Connect),
            any::<usize>().prop_map(Op::Disconnect),
            (any::<usize>(), msg).prop_map(|(i, m)| Op::Msg(i, m)),
            (any::<usize>(), phone()).prop_map(|(i, p)| Op::LinkShown(i, p)),
            (".{0,80}", phone()).prop_map(|(q, p)| Op::Link(q, p)),
            (phone(), "[A-Za-z0-9-]{0,10}").prop_map(|(p, c)| Op::Pair(p, c)),
            (phone(), phone(), ".{0,20}").prop_map(|(a, b, t)| Op::Inbound(a, b, t)),
            phone().prop_map(Op::Unlink),
            (phone(), 0u64..5_000).prop_map(|(p, ms)| Op::Drop(p, ms)),
            (phone(), "hang|oom|x").prop_map(|(p, m)| Op::Crash(p, m)),
            (0u64..200_000).prop_map(Op::Tick),
        ]
    }

    #[test]
    fn malformed_keys_close_the_connection() {
        let mut sim = Sim::new(timing(), 10);
        let c = sim.connect();
        let mut k = keys(1);
        k.noise = "short".into();
        sim.handle(
            c,
            ClientMsg::Hello {
                keys: k,
                creds: None,
                version: None,
            },
            0,
        );
        assert!(sim.take_effects().contains(&Effect::Close(c)));
    }
}
