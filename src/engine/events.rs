//! What a browser session reports, and the parsing of the adapter's binding payloads (pure).
//!
//! The adapter (`assets/wa/adapter.js`) calls the CDP binding with one JSON object per fact,
//! `{"t": kind, ...}`. The payload comes from a web page, so it is untrusted: it is size-capped
//! and parsed strictly, and anything malformed is dropped with a log line, never a panic.

use serde::{Deserialize, Serialize};

/// Largest binding payload accepted (a message body is at most 64 KiB in practice).
pub const MAX_REPORT_BYTES: usize = 1 << 20;

/// WhatsApp Web socket states after which a linked session is no longer usable without
/// intervention (whatsapp-web.js emits `disconnected` for these).
pub const TERMINAL_STATES: &[&str] = &[
    "CONFLICT",
    "DEPRECATED_VERSION",
    "PROXYBLOCK",
    "SMB_TOS_BLOCK",
    "TOS_BLOCK",
];

/// A message seen by the session (inbound, or created by this device).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundMessage {
    /// Serialized message key, e.g. `false_4915550002@c.us_3EB0…`.
    pub id: String,
    /// Sender Wid, e.g. `4915550002@c.us`.
    pub from: Option<String>,
    /// Recipient Wid.
    pub to: Option<String>,
    /// Whether this device sent it.
    pub from_me: bool,
    /// Text, or the caption of media.
    pub body: Option<String>,
    /// WhatsApp message type (`chat`, `image`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// Seconds since the epoch, as WhatsApp stamps it.
    pub timestamp: Option<i64>,
    /// Media mimetype, if any.
    pub mimetype: Option<String>,
    /// Media filename, if any.
    pub filename: Option<String>,
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
    /// A (new) QR string to show; the five comma-separated parts of WhatsApp's pairing QR.
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
    /// A new message (inbound or our own).
    Message(InboundMessage),
    /// A message's ack advanced (`-1` error, `0` pending, `1` server, `2` device, `3` read,
    /// `4` played).
    Ack {
        /// Serialized message key.
        id: String,
        /// The new ack.
        ack: i32,
    },
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
    Message {
        id: String,
        from: Option<String>,
        to: Option<String>,
        #[serde(default)]
        from_me: bool,
        body: Option<String>,
        #[serde(rename = "type")]
        kind: Option<String>,
        timestamp: Option<f64>,
        mimetype: Option<String>,
        filename: Option<String>,
    },
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
    Error {
        #[serde(rename = "where")]
        place: Option<String>,
        message: Option<String>,
    },
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
/// `Version` and `Loading` reports carry no event of their own (the version arrives again with
/// `Ready`); a terminal socket state yields both the `State` and a `Disconnected`.
pub fn parse_report(payload: &str) -> Result<Vec<EngineEvent>, ReportError> {
    if payload.len() > MAX_REPORT_BYTES {
        return Err(ReportError::TooLarge(payload.len()));
    }
    let report: Report =
        serde_json::from_str(payload).map_err(|e| ReportError::Malformed(e.to_string()))?;
    Ok(match report {
        Report::Version { .. } | Report::Loading { .. } => Vec::new(),
        Report::State { state } => {
            let mut events = vec![EngineEvent::State {
                state: state.clone(),
            }];
            if TERMINAL_STATES.contains(&state.as_str()) {
                events.push(EngineEvent::Disconnected { reason: state });
            }
            events
        }
        Report::Qr { value } => {
            if value.split(',').count() != 5 {
                return Err(ReportError::Malformed(
                    "QR string without five parts".into(),
                ));
            }
            vec![EngineEvent::Qr { value }]
        }
        Report::Code { code } => vec![EngineEvent::PairingCode { code }],
        Report::Ready { me, version } => vec![EngineEvent::Ready {
            me,
            wa_version: version,
        }],
        Report::Message {
            id,
            from,
            to,
            from_me,
            body,
            kind,
            timestamp,
            mimetype,
            filename,
        } => vec![EngineEvent::Message(InboundMessage {
            id,
            from,
            to,
            from_me,
            body,
            kind: kind.unwrap_or_else(|| "chat".to_string()),
            // WhatsApp timestamps are whole seconds; the cast saturates on nonsense.
            timestamp: timestamp.filter(|t| t.is_finite()).map(|t| t as i64),
            mimetype,
            filename,
        })],
        Report::Ack { id, ack } => {
            if !ack.is_finite() || !(-1.0..=4.0).contains(&ack) {
                return Err(ReportError::Malformed(format!("ack {ack} out of range")));
            }
            vec![EngineEvent::Ack {
                id,
                ack: ack as i32,
            }]
        }
        Report::Logout { reason } => vec![EngineEvent::LoggedOut {
            reason: reason.unwrap_or_else(|| "logout".to_string()),
        }],
        Report::Error { place, message } => vec![EngineEvent::AdapterError {
            place: place.unwrap_or_default(),
            message: message.unwrap_or_default(),
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_report() {
        assert_eq!(
            parse_report(r#"{"t":"qr","value":"2@abc,k1,k2,adv,WEB"}"#).unwrap(),
            vec![EngineEvent::Qr {
                value: "2@abc,k1,k2,adv,WEB".into()
            }]
        );
        assert_eq!(
            parse_report(r#"{"t":"ready","me":"491@c.us","version":"2.3"}"#).unwrap(),
            vec![EngineEvent::Ready {
                me: Some("491@c.us".into()),
                wa_version: Some("2.3".into())
            }]
        );
        assert_eq!(
            parse_report(r#"{"t":"ack","id":"true_1@c.us_A","ack":2}"#).unwrap(),
            vec![EngineEvent::Ack {
                id: "true_1@c.us_A".into(),
                ack: 2
            }]
        );
        let msg = parse_report(
            r#"{"t":"message","id":"false_2@c.us_B","from":"2@c.us","to":"1@c.us","from_me":false,"body":"hi","type":"chat","timestamp":1700000000}"#,
        )
        .unwrap();
        match &msg[0] {
            EngineEvent::Message(m) => {
                assert_eq!(m.body.as_deref(), Some("hi"));
                assert_eq!(m.timestamp, Some(1_700_000_000));
                assert!(!m.from_me);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            parse_report(r#"{"t":"state","state":"CONFLICT"}"#).unwrap(),
            vec![
                EngineEvent::State {
                    state: "CONFLICT".into()
                },
                EngineEvent::Disconnected {
                    reason: "CONFLICT".into()
                }
            ]
        );
        assert!(
            parse_report(r#"{"t":"version","version":"2"}"#)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn rejects_malformed_reports() {
        assert!(parse_report("not json").is_err());
        assert!(parse_report(r#"{"t":"nope"}"#).is_err());
        assert!(parse_report(r#"{"t":"qr","value":"only,three,parts"}"#).is_err());
        assert!(parse_report(r#"{"t":"ack","id":"x","ack":99}"#).is_err());
        let huge = format!(r#"{{"t":"qr","value":"{}"}}"#, "a".repeat(MAX_REPORT_BYTES));
        assert!(matches!(parse_report(&huge), Err(ReportError::TooLarge(_))));
    }
}
