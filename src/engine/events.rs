//! What a browser session reports, and the parsing of the adapter's binding payloads (pure).
//!
//! The adapter (`assets/wa/adapter/`) calls the CDP binding with one JSON object per fact,
//! `{"t": kind, ...}`. The payload comes from a web page, so it is untrusted: it is size-capped
//! and parsed strictly, and anything malformed is dropped with a log line, never a panic.

use serde::{Deserialize, Serialize};

/// Largest binding payload accepted (a message body is at most 64 KiB in practice).
pub const MAX_REPORT_BYTES: usize = 1 << 20;

/// WhatsApp Web socket states after which a linked session is no longer usable without
/// intervention (whatsapp-web.js emits `disconnected` for these). `DEPRECATED_VERSION` is one
/// too, but it has its own event ([`EngineEvent::DeprecatedVersion`]): relaunching the same
/// version cannot fix it.
pub const TERMINAL_STATES: &[&str] = &["CONFLICT", "PROXYBLOCK", "SMB_TOS_BLOCK", "TOS_BLOCK"];

/// The socket state WhatsApp Web boots to when it no longer accepts its own version.
pub const DEPRECATED_VERSION_STATE: &str = "DEPRECATED_VERSION";

/// At most this many missing names are kept from an `unsupported` report (the page is
/// untrusted; the names become metric labels).
pub const MAX_MISSING_NAMES: usize = 32;

/// Longest missing name kept (`WAWebModule.member`).
pub const MAX_MISSING_NAME_LEN: usize = 128;

/// Longest WhatsApp Web version string kept from a report.
pub const MAX_VERSION_LEN: usize = 64;

/// At most this many mentioned ids are kept from a message report.
pub const MAX_MENTIONS: usize = 256;

/// A message seen by the session (inbound, or created by this device).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundMessage {
    /// Serialized message key, e.g. `false_4915550002@c.us_3EB0…`.
    pub id: String,
    /// The chat the message belongs to (the key's remote: a person, a LID or a group).
    pub chat: Option<String>,
    /// Sender Wid, e.g. `4915550002@c.us` (in a group: the group).
    pub from: Option<String>,
    /// The sender's phone-number Wid when `from` is a LID and WhatsApp Web knows the mapping.
    pub from_pn: Option<String>,
    /// Recipient Wid.
    pub to: Option<String>,
    /// The sender within a group.
    pub author: Option<String>,
    /// The author's phone-number Wid when `author` is a LID and the mapping is known.
    pub author_pn: Option<String>,
    /// The sender's profile name as WhatsApp delivered it.
    pub push_name: Option<String>,
    /// Whether this device (or the phone) sent it.
    pub from_me: bool,
    /// Text (for text messages; WhatsApp keeps a media caption here too).
    pub body: Option<String>,
    /// Caption of media.
    pub caption: Option<String>,
    /// WhatsApp message type (`chat`, `image`, `ptt`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// Seconds since the epoch, as WhatsApp stamps it.
    pub timestamp: Option<i64>,
    /// Serialized key of the message this one replies to.
    pub quoted_wa_id: Option<String>,
    /// Mentioned Wids (at most [`MAX_MENTIONS`]).
    pub mentions: Vec<String>,
    /// Whether WhatsApp shows it as forwarded.
    pub forwarded: bool,
    /// Media mimetype, if any.
    pub mimetype: Option<String>,
    /// Media filename, if any.
    pub filename: Option<String>,
    /// Media size in bytes, if any.
    pub size: Option<u64>,
    /// SHA-256 of the media's plaintext (hex), from WhatsApp's `filehash`.
    pub sha256: Option<String>,
    /// A location, contact card or poll: `{"location": …}`, `{"contact": …}` or `{"poll": …}`
    /// in the API's shape, checked and bounded ([`super::content::parse`]).
    #[serde(default)]
    pub content: Option<serde_json::Value>,
}

/// An event of one browser session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EngineEvent {
    /// WhatsApp Web's socket state changed (`OPENING`, `UNPAIRED`, `CONNECTED`, …).
    State {
        /// The raw state name.
        state: String,
    },
    /// WhatsApp Web's `Debug.VERSION`, as soon as the page has booted.
    Version {
        /// The version string (at most [`MAX_VERSION_LEN`] characters of `[0-9A-Za-z._-]`).
        version: String,
    },
    /// WhatsApp Web lacks modules or members the adapter needs: this version cannot run the
    /// session at all (relaunching cannot help; another version may).
    Unsupported {
        /// The missing names, `WAWebModule.member` or `WAWebModule` (capped, sanitised).
        missing: Vec<String>,
        /// The version the page reported, if a valid one.
        version: Option<String>,
    },
    /// WhatsApp Web booted to `DEPRECATED_VERSION`: the server no longer accepts this version.
    DeprecatedVersion,
    /// The phone must complete a passkey step before the link finishes.
    Passkey {
        /// `required` or `confirmation`.
        state: String,
    },
    /// History sync progress after a link (0..=100).
    Loading {
        /// Percent done.
        percent: u8,
    },
    /// A (new) QR string to show: the five (or, in newer WhatsApp Web, six) comma-separated
    /// parts of WhatsApp's pairing QR.
    Qr {
        /// The raw QR string.
        value: String,
    },
    /// A pairing code for the phone to type (8 characters, shown as `ABCD-EFGH`).
    PairingCode {
        /// The code without a dash.
        code: String,
    },
    /// Logged in and synced: the session can send and receive.
    Ready {
        /// The linked account's Wid, e.g. `4915550001@c.us`.
        me: Option<String>,
        /// WhatsApp Web's `Debug.VERSION`.
        wa_version: Option<String>,
    },
    /// A new message (inbound or our own; boxed: it is much larger than the other events).
    Message(Box<InboundMessage>),
    /// A message's ack advanced (`-1` error, `0` pending, `1` server, `2` device, `3` read,
    /// `4` played).
    Ack {
        /// Serialized message key.
        id: String,
        /// The new ack.
        ack: i32,
    },
    /// Group members changed (a `gp2` notification; boxed: larger than the other events).
    GroupParticipants(Box<super::groups::GroupChange>),
    /// The device was logged out (by the phone or by us); the profile no longer logs in.
    LoggedOut {
        /// What WhatsApp Web said.
        reason: String,
    },
    /// The browser or the page died (process exit, CDP connection lost, renderer crash, hung
    /// renderer).
    Crashed {
        /// What was observed.
        reason: String,
    },
    /// WhatsApp Web reached a state the session cannot continue from by itself.
    Disconnected {
        /// The state or cause.
        reason: String,
    },
    /// A reaction on a message was set, changed or removed (boxed: large).
    Reaction(Box<super::activity::Reaction>),
    /// A message was edited (boxed: large).
    Edited(Box<super::activity::Edit>),
    /// A message was deleted for everyone.
    Revoked(Box<super::activity::Revoke>),
    /// An incoming call offer.
    Call(Box<super::activity::Call>),
    /// A contact's presence changed in a subscribed chat.
    Presence(Box<super::activity::Presence>),
    /// The adapter could not do something (module missing, QR material unavailable, …).
    AdapterError {
        /// Where in the adapter.
        place: String,
        /// The error text.
        message: String,
    },
}

/// One report of the adapter, as sent through the binding.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Report {
    Version {
        version: String,
    },
    State {
        state: String,
    },
    Qr {
        value: String,
    },
    Code {
        code: String,
    },
    Ready {
        me: Option<String>,
        version: Option<String>,
    },
    Message(Box<MessageReport>),
    Ack {
        id: String,
        ack: f64,
    },
    Logout {
        reason: Option<String>,
    },
    Loading {
        percent: Option<f64>,
    },
    Unsupported {
        #[serde(default)]
        missing: Vec<serde_json::Value>,
        version: Option<String>,
    },
    Passkey {
        state: String,
    },
    Reaction(Box<super::activity::ReactionReport>),
    Edited(Box<super::activity::EditReport>),
    Revoked(Box<super::activity::RevokeReport>),
    Call(Box<super::activity::CallReport>),
    Presence(Box<super::activity::PresenceReport>),
    GroupParticipants(Box<super::groups::GroupChange>),
    Error {
        #[serde(rename = "where")]
        place: Option<String>,
        message: Option<String>,
    },
}

/// The fields of a `message` report (boxed in [`Report`]: much larger than the others).
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct MessageReport {
    id: String,
    chat: Option<String>,
    from: Option<String>,
    from_pn: Option<String>,
    to: Option<String>,
    author: Option<String>,
    author_pn: Option<String>,
    push_name: Option<String>,
    #[serde(default)]
    from_me: bool,
    body: Option<String>,
    caption: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    timestamp: Option<f64>,
    quoted_wa_id: Option<String>,
    #[serde(default)]
    mentions: Vec<serde_json::Value>,
    #[serde(default)]
    forwarded: bool,
    mimetype: Option<String>,
    filename: Option<String>,
    size: Option<f64>,
    /// WhatsApp's `filehash`: base64 of the plaintext's SHA-256.
    filehash: Option<String>,
    /// Location, contact card or poll fields (see [`super::content`]).
    #[serde(default)]
    content: Option<serde_json::Value>,
}

/// Why a payload was dropped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReportError {
    /// Over [`MAX_REPORT_BYTES`].
    #[error("report of {0} bytes is too large")]
    TooLarge(usize),
    /// Not a report the engine knows.
    #[error("malformed report: {0}")]
    Malformed(String),
}

/// Turns one binding payload into zero or more engine events.
///
/// A terminal socket state yields both the `State` and a `Disconnected`
/// (`DEPRECATED_VERSION`: a `DeprecatedVersion`); a `loading` report without a valid percent and
/// a `version` report with an invalid version yield nothing.
pub fn parse_report(payload: &str) -> Result<Vec<EngineEvent>, ReportError> {
    if payload.len() > MAX_REPORT_BYTES {
        return Err(ReportError::TooLarge(payload.len()));
    }
    let report: Report =
        serde_json::from_str(payload).map_err(|e| ReportError::Malformed(e.to_string()))?;
    Ok(match report {
        Report::Version { version } => valid_version(&version)
            .map(|version| EngineEvent::Version { version })
            .into_iter()
            .collect(),
        Report::Loading { percent } => percent
            .filter(|p| p.is_finite())
            .map(|p| EngineEvent::Loading {
                // Clamped: the cast of a finite value in 0..=100 is exact enough.
                percent: p.clamp(0.0, 100.0) as u8,
            })
            .into_iter()
            .collect(),
        Report::Unsupported { missing, version } => vec![EngineEvent::Unsupported {
            missing: sanitize_missing(&missing),
            version: version.as_deref().and_then(valid_version),
        }],
        Report::Passkey { state } => match state.as_str() {
            "required" | "confirmation" => vec![EngineEvent::Passkey { state }],
            other => {
                return Err(ReportError::Malformed(format!(
                    "passkey state {:?}",
                    truncate(other, 32)
                )));
            }
        },
        Report::State { state } => {
            let mut events = vec![EngineEvent::State {
                state: state.clone(),
            }];
            if state == DEPRECATED_VERSION_STATE {
                events.push(EngineEvent::DeprecatedVersion);
            } else if TERMINAL_STATES.contains(&state.as_str()) {
                events.push(EngineEvent::Disconnected { reason: state });
            }
            events
        }
        Report::Qr { value } => {
            // ref,noisePub,identityPub,advSecret[,platform…]: five parts, six in newer
            // WhatsApp Web; every part non-empty.
            let parts: Vec<&str> = value.split(',').collect();
            if !(5..=6).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
                return Err(ReportError::Malformed(
                    "QR string without five or six non-empty parts".into(),
                ));
            }
            vec![EngineEvent::Qr { value }]
        }
        Report::Code { code } => vec![EngineEvent::PairingCode { code }],
        Report::Ready { me, version } => vec![EngineEvent::Ready {
            me,
            wa_version: version,
        }],
        Report::Message(m) => {
            let MessageReport {
                id,
                chat,
                from,
                from_pn,
                to,
                author,
                author_pn,
                push_name,
                from_me,
                body,
                caption,
                kind,
                timestamp,
                quoted_wa_id,
                mentions,
                forwarded,
                mimetype,
                filename,
                size,
                filehash,
                content,
            } = *m;
            let kind = kind.unwrap_or_else(|| "chat".to_string());
            let content = super::content::parse(&kind, content.as_ref());
            vec![EngineEvent::Message(Box::new(InboundMessage {
                id,
                chat,
                from,
                from_pn,
                to,
                author,
                author_pn,
                push_name,
                from_me,
                body,
                caption,
                kind,
                // WhatsApp timestamps are whole seconds; the cast saturates on nonsense.
                timestamp: timestamp.filter(|t| t.is_finite()).map(|t| t as i64),
                quoted_wa_id,
                mentions: mentions
                    .iter()
                    .filter_map(|m| m.as_str())
                    .take(MAX_MENTIONS)
                    .map(str::to_owned)
                    .collect(),
                forwarded,
                mimetype,
                filename,
                size: size
                    .filter(|n| n.is_finite() && *n >= 0.0)
                    .map(|n| n as u64),
                sha256: filehash.as_deref().and_then(sha256_hex),
                content,
            }))]
        }
        Report::Ack { id, ack } => {
            if !ack.is_finite() || !(-1.0..=4.0).contains(&ack) {
                return Err(ReportError::Malformed(format!("ack {ack} out of range")));
            }
            vec![EngineEvent::Ack {
                id,
                ack: ack as i32,
            }]
        }
        Report::GroupParticipants(c) => super::groups::parse_change(*c)
            .map(|c| EngineEvent::GroupParticipants(Box::new(c)))
            .into_iter()
            .collect(),
        Report::Logout { reason } => vec![EngineEvent::LoggedOut {
            reason: reason.unwrap_or_else(|| "logout".to_string()),
        }],
        Report::Reaction(r) => vec![EngineEvent::Reaction(Box::new(
            super::activity::reaction(*r).map_err(ReportError::Malformed)?,
        ))],
        Report::Edited(r) => vec![EngineEvent::Edited(Box::new(
            super::activity::edit(*r).map_err(ReportError::Malformed)?,
        ))],
        Report::Revoked(r) => vec![EngineEvent::Revoked(Box::new(
            super::activity::revoke(*r).map_err(ReportError::Malformed)?,
        ))],
        Report::Call(r) => vec![EngineEvent::Call(Box::new(
            super::activity::call(*r).map_err(ReportError::Malformed)?,
        ))],
        Report::Presence(r) => vec![EngineEvent::Presence(Box::new(
            super::activity::presence(*r).map_err(ReportError::Malformed)?,
        ))],
        Report::Error { place, message } => vec![EngineEvent::AdapterError {
            place: place.unwrap_or_default(),
            message: message.unwrap_or_default(),
        }],
    })
}

/// WhatsApp's `filehash` (base64 of a SHA-256) as hex; `None` unless it decodes to 32 bytes.
fn sha256_hex(filehash: &str) -> Option<String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(filehash.trim())
        .ok()?;
    (bytes.len() == 32).then(|| hex::encode(bytes))
}

/// `version` if it is a version string safe to show, log and use in a file name:
/// 1..=[`MAX_VERSION_LEN`] characters of `[0-9A-Za-z._-]`, starting with a letter or digit.
pub fn valid_version(version: &str) -> Option<String> {
    let ok = !version.is_empty()
        && version.len() <= MAX_VERSION_LEN
        && version.starts_with(|c: char| c.is_ascii_alphanumeric())
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    ok.then(|| version.to_string())
}

/// The missing names of an `unsupported` report, as far as they can be trusted: strings of
/// `[A-Za-z0-9_$.]` up to [`MAX_MISSING_NAME_LEN`] characters, deduplicated, at most
/// [`MAX_MISSING_NAMES`]; anything else is dropped (they become metric labels and log text).
fn sanitize_missing(raw: &[serde_json::Value]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in raw.iter().filter_map(|v| v.as_str()) {
        let ok = !name.is_empty()
            && name.len() <= MAX_MISSING_NAME_LEN
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '.'));
        if ok && !out.iter().any(|n| n == name) {
            out.push(name.to_string());
            if out.len() == MAX_MISSING_NAMES {
                break;
            }
        }
    }
    out
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Splits a missing name at its first `.` into `(module, member)`; a bare module has an empty
/// member.
pub fn split_missing(name: &str) -> (&str, &str) {
    name.split_once('.').unwrap_or((name, ""))
}

#[cfg(test)]
mod tests;
