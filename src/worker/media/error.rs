//! Why a media request failed (MediaError), the documented API error each one is, whether it is
//! worth retrying, and the mapping from a session's command errors.

use super::*;

/// Why a media request failed; each maps to a documented API error ([`MediaError::api`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// WhatsApp Web has no such message.
    #[error("{0}")]
    NotFound(String),
    /// The message has no downloadable media.
    #[error("{0}")]
    NoMedia(String),
    /// Not stored and the session is not WORKING.
    #[error("{0}")]
    NotReady(String),
    /// WhatsApp's media server no longer has the file.
    #[error("{0}")]
    Expired(String),
    /// Larger than the download cap.
    #[error("{0}")]
    TooLarge(String),
    /// WhatsApp Web failed the download.
    #[error("{0}")]
    WhatsApp(String),
    /// This WhatsApp Web build lacks the download modules.
    #[error("{0}")]
    Unsupported(String),
    /// WhatsApp Web did not answer in time.
    #[error("{0}")]
    Timeout(String),
    /// The shard store is not open (no term).
    #[error("{0}")]
    Unavailable(String),
    /// The media store (disk or bucket) or the index failed.
    #[error("media store: {0}")]
    Store(String),
}

impl MediaError {
    /// The documented API error.
    pub fn api(&self) -> ApiError {
        let m = self.to_string();
        match self {
            MediaError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "message_not_found", m),
            MediaError::NoMedia(_) => ApiError::new(StatusCode::NOT_FOUND, "no_media", m),
            MediaError::NotReady(_) => ApiError::new(StatusCode::CONFLICT, "not_ready", m),
            MediaError::Expired(_) => ApiError::new(StatusCode::GONE, "media_expired", m),
            MediaError::TooLarge(_) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "media_too_large", m)
            }
            MediaError::WhatsApp(_) => ApiError::new(StatusCode::BAD_GATEWAY, "whatsapp_error", m),
            MediaError::Unsupported(_) => {
                ApiError::new(StatusCode::NOT_IMPLEMENTED, "not_supported", m)
            }
            MediaError::Timeout(_) => {
                ApiError::new(StatusCode::GATEWAY_TIMEOUT, "download_timeout", m)
            }
            MediaError::Unavailable(_) => crate::worker::request::unavailable(
                "messaging_unavailable",
                "the shard store is not open (worker starting, draining or fenced)",
            ),
            MediaError::Store(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "media_store_error", m)
            }
        }
    }

    /// Whether trying again later may help (eager retries).
    pub(super) fn retryable(&self) -> bool {
        matches!(
            self,
            MediaError::NotReady(_)
                | MediaError::WhatsApp(_)
                | MediaError::Timeout(_)
                | MediaError::Store(_)
        )
    }
}

pub(super) fn not_working(status: Status) -> MediaError {
    MediaError::NotReady(format!(
        "session is {}; a file not stored yet needs it WORKING (logged in)",
        status.as_str()
    ))
}

pub(super) fn from_command(e: SessionCommandError) -> MediaError {
    match e {
        SessionCommandError::WrongStatus(st) => not_working(st),
        SessionCommandError::Engine(EngineError::Closed) | SessionCommandError::Gone => {
            not_working(Status::Stopped)
        }
        SessionCommandError::Engine(EngineError::Invalid(m)) => MediaError::TooLarge(m),
        SessionCommandError::Engine(EngineError::Timeout(what)) => {
            MediaError::Timeout(format!("WhatsApp Web did not answer the {what} in time"))
        }
        SessionCommandError::Engine(EngineError::Adapter(m)) => {
            let rest = |p: &str| m[p.len()..].trim().to_owned();
            if m.starts_with(NOT_FOUND_PREFIX) {
                MediaError::NotFound(rest(NOT_FOUND_PREFIX))
            } else if m.starts_with(NO_MEDIA_PREFIX) {
                MediaError::NoMedia(rest(NO_MEDIA_PREFIX))
            } else if m.starts_with(EXPIRED_PREFIX) {
                MediaError::Expired(format!(
                    "WhatsApp's media server no longer has this file ({})",
                    rest(EXPIRED_PREFIX)
                ))
            } else if m.starts_with(crate::engine::contacts::UNSUPPORTED_PREFIX) {
                MediaError::Unsupported(m)
            } else {
                MediaError::WhatsApp(format!("the download failed in WhatsApp Web: {m}"))
            }
        }
        other => MediaError::WhatsApp(format!("the download failed in WhatsApp Web: {other}")),
    }
}
