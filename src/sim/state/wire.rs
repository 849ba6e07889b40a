//! Wire messages between the page and the simulated servers; the views, requests and errors
//! of the control API are in `wire/control.rs` (re-exported here).

use serde::{Deserialize, Serialize};

use super::ConnId;

mod control;
pub use control::*;

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
    /// The platform (`WAWebCompanionRegClientUtils.DEVICE_PLATFORM`, `"1"` for Chrome).
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

/// An outbound message as the page sends it (the fields of WhatsApp's message data it needs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutMsg {
    /// Serialized key `true_<to>_<id>[_<participant>]`.
    pub id: String,
    /// Chat wid: `<digits>@c.us`, `<lid>@lid` or a group `…@g.us`.
    pub to: String,
    /// The sender as the message names it: me's PN or LID user.
    #[serde(default)]
    pub from: Option<String>,
    /// Me as a group member (groups only).
    #[serde(default)]
    pub participant: Option<String>,
    /// `chat` or a media type.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Text of a `chat` message (for media, only a clipped `data:` body reaches the server).
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
    /// Inline media (refused: media must go through the upload pipeline).
    #[serde(default)]
    pub data: Option<String>,
    /// Plaintext size.
    #[serde(default)]
    pub size: Option<u64>,
    /// Base64 SHA-256 of the plaintext.
    #[serde(default)]
    pub filehash: Option<String>,
    /// Base64 SHA-256 of the encrypted upload.
    #[serde(default)]
    pub enc_filehash: Option<String>,
    /// Base64 of the 32-byte media key.
    #[serde(default)]
    pub media_key: Option<String>,
    /// When the media key was made, seconds.
    #[serde(default)]
    pub media_key_timestamp: Option<u64>,
    /// The upload's direct path.
    #[serde(default)]
    pub direct_path: Option<String>,
    /// The upload's URL.
    #[serde(default)]
    pub deprecated_mms3_url: Option<String>,
    /// Reply, mentions, forward, location, card, poll, reaction and protocol fields (issue 12).
    #[serde(flatten, default)]
    pub extra: super::send_types::OutExtras,
}

/// A PN↔LID mapping a page learns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mapping {
    /// `<digits>@c.us`.
    pub pn: String,
    /// `<lid>@lid`.
    pub lid: String,
}

/// A group as a page is told about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupView {
    /// `<digits>-<digits>@g.us`.
    pub id: String,
    /// Subject.
    pub subject: String,
    /// Member wids, PN or LID by the addressing mode.
    pub participants: Vec<String>,
    /// `groupMetadata.isLidAddressingMode`.
    pub lid_addressing: bool,
    /// Creation, seconds.
    pub creation: u64,
    /// PN↔LID of every member.
    pub mappings: Vec<Mapping>,
    /// The super admin (`groupMetadata.owner`), PN or LID by the addressing mode.
    pub owner: Option<String>,
    /// Admin wids (`participant.isAdmin`), the owner included.
    pub admins: Vec<String>,
    /// The description (`groupMetadata.desc`).
    pub desc: String,
}

/// How an inbound message reaches the page undecrypted first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ciphertext {
    /// After how long it becomes its real type, ms.
    pub after_ms: u64,
    /// `change` (the same model's `change:type`) or `readd` (placeholder removed, a fresh
    /// model with the same id added).
    pub path: String,
}

/// What a page sends over the websocket.
// Parsed one at a time and consumed at once: boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
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
    /// `Socket.logout(reason)`.
    Logout {
        /// WhatsApp's logout reason code.
        #[serde(default)]
        reason: Option<String>,
    },
    /// `Socket.takeover()`.
    Takeover,
    /// A group IQ of WhatsApp Web's group jobs (`WAWebGroupCreateJob`,
    /// `WAWebGroupModifyParticipantsJob`, `WAWebGroupInviteAction`, `WAWebGroupModifyInfoJob`,
    /// `WAWebExitGroupAction`); answered by `group_result` or `group_error`.
    GroupIq {
        /// Correlates the answer.
        req: u64,
        /// `create`, `add`, `remove`, `promote`, `demote`, `invite`, `invite_reset`, `leave`,
        /// `subject` or `description`.
        op: String,
        /// The group (all but `create`).
        #[serde(default)]
        group: Option<String>,
        /// User wids (`create` and the participant ops).
        #[serde(default)]
        participants: Vec<String>,
        /// The subject (`create`, `subject`) or the description (`description`; absent
        /// deletes it).
        #[serde(default)]
        value: Option<String>,
    },
    /// `WAWebQueryExistsJob.queryExist` (a USync contact query): exactly one of `phone` and
    /// `lid`.
    QueryExists {
        /// Correlates the answer.
        req: u64,
        /// The number (`+` and separators allowed).
        #[serde(default)]
        phone: Option<String>,
        /// A `<digits>@lid`.
        #[serde(default)]
        lid: Option<String>,
    },
    /// The page connected and asks for its chats and contacts (`chat` and `contact` answers).
    ChatSync,
    /// `MsgCollection.loadMessagesQuery` (direction `before`): up to `count` messages of `chat`
    /// before the message with key id `before` (the newest without).
    LoadMsgs {
        /// Correlates the answer.
        req: u64,
        /// The chat.
        chat: String,
        /// The anchor's key id.
        #[serde(default)]
        before: Option<String>,
        /// How many.
        count: usize,
    },
    /// A chat or contact action of the page's bridges: `seen`, `archive`, `unarchive`,
    /// `chatstate` (with `state`), `block`, `unblock`, `picture`.
    ChatAction {
        /// Correlates the answer.
        req: u64,
        /// The action.
        action: String,
        /// The chat or contact id.
        chat: String,
        /// The chat state (`typing`, `recording_audio`, `idle`).
        #[serde(default)]
        state: Option<String>,
    },
    /// `WADeprecatedSendIq.deprecatedCastStanza(stanza)`: `{tag, attrs, content}`.
    Stanza {
        /// The stanza.
        stanza: serde_json::Value,
    },
    /// `PresenceCollection.find(wid)` subscribed to a jid's presence.
    PresenceSubscribe {
        /// The jid.
        jid: String,
    },
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
        /// Lifetime of the ref (`Conn.refTTL`).
        ttl_ms: u64,
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
        /// `<lid>@lid` of the phone.
        lid: String,
        /// The groups the phone is in.
        groups: Vec<GroupView>,
        /// Fault `passkey: checkpoint`: the integrity challenge the page must open.
        #[serde(skip_serializing_if = "Option::is_none")]
        checkpoint: Option<String>,
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
        /// `<lid>@lid` of the phone.
        lid: String,
        /// The groups the phone is in.
        groups: Vec<GroupView>,
        /// Fault `passkey: checkpoint`: the integrity challenge the page must open.
        #[serde(skip_serializing_if = "Option::is_none")]
        checkpoint: Option<String>,
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
    /// Answer to an exists query: the account's PN↔LID pair, `null` when no account has it.
    Exists {
        /// The request.
        req: u64,
        /// The account.
        result: Option<Mapping>,
    },
    /// An exists query failed (the page throws `ServerStatusCodeError(code, text)`).
    ExistsError {
        /// The request.
        req: u64,
        /// The status code.
        code: u16,
        /// Why.
        text: String,
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
        /// The key id.
        id: String,
        /// The chat: `<digits>@c.us`, `<lid>@lid` or the group.
        chat: String,
        /// Me as the message addresses me (PN or LID user).
        me: String,
        /// The sender in a group (PN or LID by the group's mode); also the key's participant.
        #[serde(skip_serializing_if = "Option::is_none")]
        author: Option<String>,
        /// Text.
        body: String,
        /// Seconds since the epoch.
        ts: u64,
        /// The sender's PN↔LID mapping, when the page may learn it.
        #[serde(skip_serializing_if = "Option::is_none")]
        mapping: Option<Mapping>,
        /// Delivered as `ciphertext` first.
        #[serde(skip_serializing_if = "Option::is_none")]
        ciphertext: Option<Ciphertext>,
        /// A media message: what the sender's upload left in the message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media: Option<Box<MsgMedia>>,
        /// A structured message (location, contact card, poll) and/or a reply's quote, in
        /// WhatsApp Web's model attributes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<Box<super::content::MsgContent>>,
        /// Sent by the phone itself (another of the account's devices): the key is `fromMe`,
        /// `author` (in a group) is me.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        from_me: bool,
    },
    /// An earlier inbound message was revoked by its sender.
    Revoke {
        /// Serialized key of the original.
        id: String,
        /// Seconds since the epoch.
        ts: u64,
    },
    /// A contact reacted to a message (`text` empty: removed).
    Reaction {
        /// The reaction's key id.
        id: String,
        /// The chat of the message reacted to.
        chat: String,
        /// The reactor within a group.
        #[serde(skip_serializing_if = "Option::is_none")]
        author: Option<String>,
        /// Serialized key of the message reacted to.
        target: String,
        /// The reaction text.
        text: String,
        /// Milliseconds since the epoch (WhatsApp stamps reactions in ms).
        ts_ms: u64,
    },
    /// A contact edited its message.
    Edit {
        /// Serialized key of the edited message.
        target: String,
        /// Its chat.
        chat: String,
        /// The sender within a group.
        #[serde(skip_serializing_if = "Option::is_none")]
        author: Option<String>,
        /// The edit's own key id.
        edit_id: String,
        /// The new text.
        body: String,
        /// Milliseconds since the epoch.
        ts_ms: u64,
    },
    /// An incoming call offer.
    Call {
        /// The call id.
        id: String,
        /// The caller's wid.
        from: String,
        /// A video call.
        video: bool,
        /// A group call.
        group: bool,
        /// Seconds since the epoch.
        ts: u64,
    },
    /// A subscribed contact's presence (WhatsApp's chat state type).
    Presence {
        /// The subscribed jid.
        chat: String,
        /// The member, for a group.
        #[serde(skip_serializing_if = "Option::is_none")]
        participant: Option<String>,
        /// `available`, `unavailable`, `typing`, `recording_audio`, `idle`.
        #[serde(rename = "type")]
        kind: String,
        /// Last seen, seconds since the epoch.
        #[serde(skip_serializing_if = "Option::is_none")]
        last_seen: Option<u64>,
    },
    /// A group the phone is in (created or changed).
    Group {
        /// The group.
        group: GroupView,
    },
    /// Answer to a group IQ (its shape per op: docs/simulator.md "Groups").
    GroupResult {
        /// The request.
        req: u64,
        /// The answer.
        result: serde_json::Value,
    },
    /// A group IQ failed (the page rejects with `ServerStatusCodeError(code, text)`).
    GroupError {
        /// The request.
        req: u64,
        /// The status code.
        code: u16,
        /// Why.
        text: String,
    },
    /// A group notification (WhatsApp's `w:gp2`): the page updates the group's metadata and
    /// adds a `gp2` message with this `subtype` to the group's chat.
    GroupNotice {
        /// The notification's key id.
        id: String,
        /// The group after the change.
        group: GroupView,
        /// `create`, `add`, `remove`, `leave`, `promote`, `demote`, `subject`, `description`.
        subtype: String,
        /// The users it happened to (wids by the group's addressing mode).
        recipients: Vec<String>,
        /// Who did it.
        #[serde(skip_serializing_if = "Option::is_none")]
        author: Option<String>,
        /// Seconds since the epoch.
        ts: u64,
    },
    /// Passkey linking moved: `prologue`, `code` (with the verification code), `cancelled`.
    Passkey {
        /// The stage.
        stage: String,
        /// The verification code, with `code`.
        #[serde(skip_serializing_if = "Option::is_none")]
        code: Option<String>,
    },
    /// The integrity checkpoint was passed on the phone: the modal closes.
    CheckpointDone,
    /// Fault: wreck the renderer.
    Crash {
        /// `hang` or `oom`.
        mode: String,
    },
    /// A chat of the phone, with its newest messages (created, changed, or at sync).
    Chat {
        /// The chat.
        chat: super::chats::ChatView,
    },
    /// A contact of the phone.
    Contact {
        /// The contact.
        contact: super::chats::ContactView,
    },
    /// Answer to `load_msgs`.
    Msgs {
        /// The request.
        req: u64,
        /// 200, or 404 for an unknown chat or anchor.
        status: u16,
        /// The messages, oldest first.
        msgs: Vec<super::chats::HistMsg>,
        /// Whether earlier ones exist.
        more: bool,
    },
    /// Answer to a chat action.
    ChatResult {
        /// The request.
        req: u64,
        /// 200 or the error status.
        status: u16,
        /// The picture URL, for `picture`.
        #[serde(skip_serializing_if = "Option::is_none")]
        url: Option<String>,
    },
    /// A protocol error (bad message).
    Error {
        /// Why.
        message: String,
    },
}

/// Work for the websocket layer.
// Drained right after each core call; boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Send this to that connection.
    Send(ConnId, ServerMsg),
    /// Close that connection.
    Close(ConnId),
}
