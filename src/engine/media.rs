//! Inbound media download from a session's page: the adapter's `mediaRead` command
//! (`assets/wa/adapter/media.js`), which goes through WhatsApp Web's own download manager, read
//! in bounded base64 chunks (one `Runtime.evaluate` each) into a writer.
//!
//! Why chunks over `Runtime.evaluate` and not CDP `IO.read` of a blob: WhatsApp's downloader
//! resolves an `ArrayBuffer` in the page anyway, and a chunked command needs no blob URL, no
//! remote object handles to release and no second CDP domain; each answer is at most
//! [`CHUNK_BYTES`] (≈1.4 MB of base64), so neither the CDP socket nor the engine's memory holds
//! a whole file. The SHA-256 of what arrives is checked against the message's `filehash`
//! (WhatsApp's base64 SHA-256 of the plaintext) before the caller keeps anything.

use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::driver::{BrowserSession, EngineError, js_string};
use super::supervisor::{SessionCommandError, SessionHandle};

/// The largest piece one `mediaRead` call returns (the adapter caps it too).
pub const CHUNK_BYTES: u64 = 1024 * 1024;
/// The adapter's error prefix: WhatsApp Web has no such message (in memory).
pub const NOT_FOUND_PREFIX: &str = "message_not_found:";
/// The adapter's error prefix: the message carries no downloadable media.
pub const NO_MEDIA_PREFIX: &str = "no_media:";
/// The adapter's error prefix: the media server no longer has the file (404/410).
pub const EXPIRED_PREFIX: &str = "media_expired:";
/// The adapter's error prefix: the page dropped a file mid-read (read again from 0).
pub const RESTART_PREFIX: &str = "media_restart:";

/// What a download delivered (the bytes went to the writer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadedMedia {
    /// WhatsApp's message type (`image`, `ptt`, `document`, …).
    pub kind: String,
    /// The mimetype the message names.
    pub mimetype: Option<String>,
    /// The file name the message names.
    pub filename: Option<String>,
    /// Bytes written.
    pub size: u64,
    /// Hex SHA-256 of the bytes (equal to the message's `filehash`).
    pub sha256: String,
}

/// Whether `s` can be a serialized message key (`true|false_<chat>_<id>[_<participant>]`):
/// ASCII letters, digits and `@ . _ - :`, at most 256 bytes. Checked before it reaches the page
/// or a store key.
pub fn valid_wa_id(s: &str) -> bool {
    (8..=256).contains(&s.len())
        && (s.starts_with("true_") || s.starts_with("false_"))
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'@' | b'.' | b'_' | b'-' | b':'))
}

/// One `mediaRead` answer, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Chunk {
    kind: String,
    mimetype: Option<String>,
    filename: Option<String>,
    filehash: Option<String>,
    size: u64,
    offset: u64,
    data: Vec<u8>,
    done: bool,
}

fn clipped(v: &Value, field: &str, max: usize) -> Option<String> {
    v.get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(|s| s.chars().take(max).collect())
}

fn parse_chunk(v: &Value) -> Result<Chunk, EngineError> {
    let bad = |what: &str| EngineError::Adapter(format!("media read answer: {what}"));
    let size = v
        .get("size")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("no size"))?;
    let offset = v
        .get("offset")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("no offset"))?;
    let data = v
        .get("data")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no data"))?;
    let data = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|_| bad("data is not base64"))?;
    if data.len() as u64 > CHUNK_BYTES || offset + data.len() as u64 > size {
        return Err(bad("a chunk outside the file"));
    }
    Ok(Chunk {
        kind: clipped(v, "type", 32).unwrap_or_else(|| "unknown".into()),
        mimetype: clipped(v, "mimetype", 255),
        filename: clipped(v, "filename", 255),
        filehash: clipped(v, "filehash", 64),
        size,
        offset,
        data,
        done: v.get("done").and_then(Value::as_bool).unwrap_or(false),
    })
}

/// Hex of WhatsApp's base64 `filehash`, if it is one (32 bytes).
pub fn filehash_hex(filehash: &str) -> Option<String> {
    base64::engine::general_purpose::STANDARD
        .decode(filehash)
        .ok()
        .filter(|b| b.len() == 32)
        .map(hex::encode)
}

// === impl BrowserSession ===

impl BrowserSession {
    /// Downloads the media of message `wa_id` through WhatsApp Web into `sink`: at most
    /// `max_bytes` (a larger file is refused before any byte is written), checked against the
    /// message's `filehash`. On error the sink may hold a part: the caller discards it.
    pub async fn download_media<W: AsyncWrite + Unpin>(
        &self,
        wa_id: &str,
        max_bytes: u64,
        sink: &mut W,
    ) -> Result<DownloadedMedia, EngineError> {
        if !valid_wa_id(wa_id) {
            return Err(EngineError::Invalid(format!("bad message id {wa_id:?}")));
        }
        let mut hasher = Sha256::new();
        let mut offset = 0u64;
        let mut first: Option<Chunk> = None;
        loop {
            let expr = format!(
                "window.__wafleetAdapter.mediaRead({}, {offset}, {CHUNK_BYTES})",
                js_string(wa_id)
            );
            let chunk = parse_chunk(&self.call(expr, "media download").await?)?;
            if let Some(f) = &first
                && chunk.size != f.size
            {
                return Err(EngineError::Adapter(
                    "the file changed size mid-read".into(),
                ));
            }
            if chunk.size > max_bytes {
                return Err(EngineError::Invalid(format!(
                    "the file has {} bytes; at most {max_bytes} are accepted",
                    chunk.size
                )));
            }
            if chunk.offset != offset || (chunk.data.is_empty() && !chunk.done) {
                return Err(EngineError::Adapter("media read out of order".into()));
            }
            hasher.update(&chunk.data);
            sink.write_all(&chunk.data)
                .await
                .map_err(|e| EngineError::Adapter(format!("writing the media: {e}")))?;
            offset += chunk.data.len() as u64;
            let done = chunk.done;
            let size = chunk.size;
            if first.is_none() {
                first = Some(Chunk {
                    data: Vec::new(),
                    ..chunk
                });
            }
            if done {
                if offset != size {
                    return Err(EngineError::Adapter("the file ended early".into()));
                }
                break;
            }
        }
        sink.flush()
            .await
            .map_err(|e| EngineError::Adapter(format!("writing the media: {e}")))?;
        let first = first.ok_or_else(|| EngineError::Adapter("no media answer".into()))?;
        let sha256 = hex::encode(hasher.finalize());
        let expected = first
            .filehash
            .as_deref()
            .and_then(filehash_hex)
            .ok_or_else(|| EngineError::Adapter("the message has no valid filehash".into()))?;
        if expected != sha256 {
            return Err(EngineError::Adapter(format!(
                "the downloaded file does not match the message's filehash ({sha256} != {expected})"
            )));
        }
        Ok(DownloadedMedia {
            kind: first.kind,
            mimetype: first.mimetype,
            filename: first.filename,
            size: offset,
            sha256,
        })
    }
}

// === impl SessionHandle ===

impl SessionHandle {
    /// [`BrowserSession::download_media`] (the session must be WORKING).
    pub async fn download_media<W: AsyncWrite + Unpin>(
        &self,
        wa_id: &str,
        max_bytes: u64,
        sink: &mut W,
    ) -> Result<DownloadedMedia, SessionCommandError> {
        Ok(self
            .working_browser()?
            .download_media(wa_id, max_bytes, sink)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn message_ids_are_checked_before_they_reach_the_page() {
        assert!(valid_wa_id("false_4915550002@c.us_3EB0AA11"));
        assert!(valid_wa_id("false_123-456@g.us_3EB0_4915550003@c.us"));
        for bad in [
            "",
            "false_",
            "x_4915550002@c.us_3EB0",
            "false_49155'); alert(1)//",
            "false_4915550002@c.us_3EB0/../../etc",
        ] {
            assert!(!valid_wa_id(bad), "{bad}");
        }
        assert!(!valid_wa_id(&format!("false_{}", "1".repeat(300))));
    }

    #[test]
    fn chunks_are_checked() {
        let ok = parse_chunk(&json!({"size": 3, "offset": 0, "data": "YWJj", "done": true, "type": "image", "filehash": "x"})).unwrap();
        assert_eq!((ok.data.as_slice(), ok.done), (&b"abc"[..], true));
        for bad in [
            json!({"offset": 0, "data": ""}),
            json!({"size": 2, "offset": 0, "data": "YWJj"}),
            json!({"size": 3, "offset": 0, "data": "!!"}),
        ] {
            assert!(parse_chunk(&bad).is_err(), "{bad}");
        }
        let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(b"abc"));
        assert_eq!(
            filehash_hex(&hash).unwrap(),
            hex::encode(Sha256::digest(b"abc"))
        );
        assert!(filehash_hex("YWJj").is_none());
    }
}
