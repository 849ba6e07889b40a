//! The control API's views (`/sim/messages`, `/sim/devices`), requests (`/sim/inbound`,
//! `/sim/groups`) and errors, apart from the page wire protocol in `wire.rs`.

use serde::{Deserialize, Serialize};

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
    /// Recipient digits (the phone behind a LID too), or the whole wid for groups.
    pub to: String,
    /// The message type: `chat` or the media type (`image`, `video`, `audio`, `ptt`,
    /// `document`, `sticker`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Text or caption.
    pub text: Option<String>,
    /// Media, for media messages.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub media: Option<MediaInfo>,
    /// Media only: it came through the upload pipeline (always true for an accepted media
    /// message).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub uploaded: Option<bool>,
    /// Media only: hex SHA-256 of the plaintext, computed by the server from the upload.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sha256: Option<String>,
    /// Me as a group member, for group messages.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub participant: Option<String>,
    /// `pn` or `lid`: how the message addressed me and the chat.
    pub addressing: String,
    /// Current ack (0 for a refused message, which never advances).
    pub ack: u8,
    /// Why the server refused it; absent for accepted messages.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub refused: Option<String>,
    /// When the server received it, ms since the epoch.
    pub timestamp: u64,
    /// What the send types beyond text and media carry (issue 12).
    #[serde(flatten, default)]
    pub extra: crate::sim::state::send_types::SendExtras,
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
    /// `<lid>@lid`.
    pub lid: String,
}

/// Result of a QR scan or code entry when the passkey fault holds the link back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum LinkOutcome {
    /// Linked.
    Linked(Linked),
    /// Waiting for `POST /sim/passkey`.
    Passkey {
        /// `"pending"`.
        passkey: &'static str,
        /// Phone digits.
        phone: String,
    },
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

impl LinkOutcome {
    /// The link, unless passkey linking holds it.
    pub fn linked(self) -> Option<Linked> {
        match self {
            LinkOutcome::Linked(l) => Some(l),
            LinkOutcome::Passkey { .. } => None,
        }
    }
}

fn yes() -> bool {
    true
}

/// `POST /sim/inbound`: a contact writes to a linked phone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inbound {
    /// The linked phone.
    pub to: String,
    /// The sender's digits (1:1 chats; in a group, `author`).
    #[serde(default)]
    pub from: Option<String>,
    /// Text (may be left out for a media message).
    #[serde(default)]
    pub text: String,
    /// The sender is addressed by its LID (the chat is `<lid>@lid`).
    #[serde(default)]
    pub lid: bool,
    /// Whether the page learns the sender's PN↔LID mapping (default true).
    #[serde(default = "yes")]
    pub lid_mapping: bool,
    /// A group the phone is in.
    #[serde(default)]
    pub group: Option<String>,
    /// The sender in a group (digits).
    #[serde(default)]
    pub author: Option<String>,
    /// Delivered as `ciphertext` first.
    #[serde(default)]
    pub ciphertext: Option<super::Ciphertext>,
    /// A file: the message becomes a media message of the type the mimetype gives
    /// (`image/*` image, `video/*` video, `audio/*` audio, else document), encrypted and kept
    /// on the media server as WhatsApp's sender would upload it.
    #[serde(default)]
    pub media: Option<InboundMediaReq>,
    /// The caption of a media message.
    #[serde(default)]
    pub caption: Option<String>,
    /// The message type in the API's names (`text`, `image`, …, `voice`, `sticker`,
    /// `location`, `contact`, `poll`); left out, it follows from the parts given.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// A shared location (type `location`).
    #[serde(default)]
    pub location: Option<crate::sim::state::content::InboundLocation>,
    /// A shared contact card (type `contact`).
    #[serde(default)]
    pub contact: Option<crate::sim::state::content::InboundContact>,
    /// A poll (type `poll`).
    #[serde(default)]
    pub poll: Option<crate::sim::state::content::InboundPoll>,
    /// The `wa_id` of an earlier message of the same chat that this one replies to.
    #[serde(default)]
    pub quoted: Option<String>,
    /// The phone itself wrote this, in the chat with `from` or in `group` (no `author`): its
    /// linked devices receive it as their own message (`fromMe`), as WhatsApp's multi-device
    /// sync gives a message sent on the phone.
    #[serde(default)]
    pub from_me: bool,
}

/// The `media` of `POST /sim/inbound`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundMediaReq {
    /// The file's mimetype, e.g. `image/png`.
    pub mimetype: String,
    /// The file, base64 (standard alphabet).
    pub data: String,
    /// Its file name (documents show it).
    #[serde(default)]
    pub filename: Option<String>,
}

/// The media part of an inbound [`super::ServerMsg::Msg`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MsgMedia {
    /// Where and how the file is kept (media type, direct path, key, hashes, size).
    #[serde(flatten)]
    pub file: crate::sim::state::media::InboundMedia,
    /// The mimetype.
    pub mimetype: String,
    /// The file name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// The caption.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
}

impl Inbound {
    /// A plain 1:1 text from `from` to `to`.
    pub fn text(to: &str, from: &str, text: &str) -> Self {
        Inbound {
            to: to.into(),
            from: Some(from.into()),
            text: text.into(),
            lid_mapping: true,
            ..Inbound::default()
        }
    }
}

/// `POST /sim/groups`: a group the given phones are in.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewGroup {
    /// The linked phone creating the group (optional; it becomes a participant).
    #[serde(default)]
    pub phone: Option<String>,
    /// Subject.
    pub subject: String,
    /// Member phones (at least one linked).
    pub participants: Vec<String>,
    /// Members addressed by LID.
    #[serde(default)]
    pub lid_addressing: bool,
}
