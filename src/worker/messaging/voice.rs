//! Voice notes: WhatsApp plays a voice note (`ptt`) on every phone only when it is OGG/Opus,
//! mono. Anything else (MP3, M4A, WAV, stereo Opus …) is converted here with `ffmpeg` (Debian's
//! `ffmpeg` package) in a bounded child process: input and output size caps, a timeout, and the
//! child killed when the conversion is dropped (client gone, worker stopping).

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Longest a conversion may take.
pub const CONVERT_TIMEOUT: Duration = Duration::from_secs(60);

/// The mimetype of a converted voice note.
pub const VOICE_MIMETYPE: &str = "audio/ogg; codecs=opus";

/// Why a voice note could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum VoiceError {
    /// `ffmpeg` is not installed or could not be started.
    #[error("ffmpeg could not be started: {0}")]
    Spawn(std::io::Error),
    /// `ffmpeg` refused the input (not audio it can decode).
    #[error("the audio could not be converted: {0}")]
    Convert(String),
    /// The conversion took longer than [`CONVERT_TIMEOUT`].
    #[error("the conversion took longer than {} s", CONVERT_TIMEOUT.as_secs())]
    Timeout,
    /// The converted file is larger than the cap.
    #[error("the converted voice note is larger than {0} bytes")]
    TooLarge(usize),
}

/// Whether `bytes` are already a mono OGG/Opus stream: the first page is `OggS` carrying an
/// `OpusHead` whose channel count (byte 9 of the header) is 1.
pub fn is_ogg_opus_mono(bytes: &[u8]) -> bool {
    if bytes.len() < 28 + 19 || &bytes[..4] != b"OggS" {
        return false;
    }
    // The first page's header is 27 bytes plus one byte per segment.
    let segments = bytes[26] as usize;
    let start = 27 + segments;
    bytes
        .get(start..start + 10)
        .is_some_and(|h| &h[..8] == b"OpusHead" && h[9] == 1)
}

/// Converts `input` to OGG/Opus mono (48 kHz, 32 kbit/s, WhatsApp's own voice note format).
/// The output is capped at `max_bytes`.
pub async fn to_ogg_opus(input: Vec<u8>, max_bytes: usize) -> Result<Vec<u8>, VoiceError> {
    let mut child = tokio::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-i",
            "pipe:0",
            "-vn",
            "-map_metadata",
            "-1",
            "-ac",
            "1",
            "-ar",
            "48000",
            "-c:a",
            "libopus",
            "-b:a",
            "32k",
            "-application",
            "voip",
            "-f",
            "ogg",
            "pipe:1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(VoiceError::Spawn)?;
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(VoiceError::Convert("ffmpeg pipes missing".into()));
    };
    let work = async {
        // Written while the output is read: a full pipe either way would stall both sides.
        let feed = async move {
            // ffmpeg may stop reading early (bad input); its exit status says why.
            let _ = stdin.write_all(&input).await;
            drop(stdin);
        };
        let read = async {
            let mut out = Vec::new();
            let mut limited = stdout.take(max_bytes as u64 + 1);
            limited
                .read_to_end(&mut out)
                .await
                .map_err(|e| VoiceError::Convert(e.to_string()))?;
            Ok::<_, VoiceError>(out)
        };
        let errors = async {
            let mut s = String::new();
            let _ = stderr.take(4096).read_to_string(&mut s).await;
            s
        };
        let ((), out, errors) = tokio::join!(feed, read, errors);
        let out = out?;
        if out.len() > max_bytes {
            return Err(VoiceError::TooLarge(max_bytes));
        }
        let status = child
            .wait()
            .await
            .map_err(|e| VoiceError::Convert(e.to_string()))?;
        if !status.success() || out.is_empty() {
            let why = errors
                .lines()
                .last()
                .unwrap_or("no output")
                .trim()
                .to_owned();
            return Err(VoiceError::Convert(why));
        }
        Ok(out)
    };
    // On timeout the future (and with it the child, kill_on_drop) is dropped.
    tokio::time::timeout(CONVERT_TIMEOUT, work)
        .await
        .map_err(|_| VoiceError::Timeout)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ogg_opus_mono_is_recognised_from_its_first_page() {
        let mut page = b"OggS\0\x02".to_vec();
        page.extend_from_slice(&[0u8; 20]);
        page.push(1); // one segment
        page.push(19); // of 19 bytes
        let mut head = b"OpusHead\x01\x01".to_vec();
        head.extend_from_slice(&[0u8; 9]);
        let mono = [page.clone(), head.clone()].concat();
        assert!(is_ogg_opus_mono(&mono));
        head[9] = 2;
        assert!(!is_ogg_opus_mono(&[page, head].concat()));
        assert!(!is_ogg_opus_mono(b"ID3\x04\0\0\0\0\0\0"));
    }

    #[tokio::test]
    async fn garbage_is_refused_with_ffmpegs_reason() {
        if std::process::Command::new("ffmpeg")
            .arg("-version")
            .output()
            .is_err()
        {
            panic!("ffmpeg is required (scripts/lib.sh ensure_test_deps installs it)");
        }
        let e = to_ogg_opus(b"not audio at all".to_vec(), 1 << 20)
            .await
            .unwrap_err();
        assert!(matches!(e, VoiceError::Convert(_)), "{e}");
    }
}
