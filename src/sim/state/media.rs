//! The simulated media servers: encrypted uploads kept in memory, and the check a media message
//! must pass — it has to reference a completed upload by `directPath`, `encFilehash`, `mediaKey`
//! and `filehash`, and the upload must decrypt with that key to bytes of that hash, exactly what
//! a WhatsApp recipient verifies.
//!
//! The scheme is WhatsApp's: HKDF-SHA256 (zero salt, the media type's info string) expands the
//! 32-byte media key to 112 bytes: IV (16), AES-256 key (32), MAC key (32), ref key (32). The
//! file is AES-256-CBC (PKCS#7) of the bytes followed by the first 10 bytes of
//! HMAC-SHA256(MAC key, IV ‖ ciphertext).

use std::collections::{BTreeMap, VecDeque};

use aes::cipher::{BlockDecryptMut, KeyIvInit, block_padding::Pkcs7};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::wire::OutMsg;

/// Largest plaintext a media message may carry (16 MiB, WhatsApp's limit for images and
/// voice notes; the simulator uses it for every type).
pub const MAX_MEDIA_BYTES: usize = 16 * 1024 * 1024;
/// Largest upload body: the largest plaintext, one padding block and the 10-byte MAC.
pub const MAX_UPLOAD_BYTES: usize = MAX_MEDIA_BYTES + 16 + 10;
/// Memory all uploads may take together; the oldest are dropped beyond it.
pub const MAX_STORE_BYTES: usize = 256 * 1024 * 1024;
/// The host-less prefix of every direct path.
const DIRECT_PATH_PREFIX: &str = "/v/t62.7118-24/";

type HmacSha256 = Hmac<Sha256>;

/// The HKDF info string of a media type (as WhatsApp names them).
pub fn info_of(media_type: &str) -> Option<&'static str> {
    Some(match media_type {
        "image" | "sticker" => "WhatsApp Image Keys",
        "video" | "gif" => "WhatsApp Video Keys",
        "audio" | "ptt" => "WhatsApp Audio Keys",
        "document" => "WhatsApp Document Keys",
        _ => return None,
    })
}

/// HKDF-SHA256 with an all-zero salt: 112 bytes.
fn expand(media_key: &[u8], info: &str) -> [u8; 112] {
    let mut ext = <HmacSha256 as Mac>::new_from_slice(&[0u8; 32]).expect("any key length");
    ext.update(media_key);
    let prk = ext.finalize().into_bytes();
    let mut out = [0u8; 112];
    let mut prev: Vec<u8> = Vec::new();
    for (i, chunk) in out.chunks_mut(32).enumerate() {
        let mut m = <HmacSha256 as Mac>::new_from_slice(&prk).expect("any key length");
        m.update(&prev);
        m.update(info.as_bytes());
        m.update(&[(i + 1) as u8]);
        let t = m.finalize().into_bytes();
        chunk.copy_from_slice(&t[..chunk.len()]);
        prev = t.to_vec();
    }
    out
}

/// Encrypts `plain` the way WhatsApp's uploader does (used by the tests).
pub fn encrypt(plain: &[u8], media_key: &[u8; 32], media_type: &str) -> Option<Vec<u8>> {
    use aes::cipher::BlockEncryptMut;
    let k = expand(media_key, info_of(media_type)?);
    let enc = cbc::Encryptor::<aes::Aes256>::new_from_slices(&k[16..48], &k[..16])
        .ok()?
        .encrypt_padded_vec_mut::<Pkcs7>(plain);
    let mut m = <HmacSha256 as Mac>::new_from_slice(&k[48..80]).ok()?;
    m.update(&k[..16]);
    m.update(&enc);
    let mac = m.finalize().into_bytes();
    let mut file = enc;
    file.extend_from_slice(&mac[..10]);
    Some(file)
}

/// Why an upload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    /// Not a media type.
    #[error("unknown media type {0:?}")]
    Type(String),
    /// The token is not the base64url SHA-256 of the body.
    #[error("the upload token is not the hash of the body")]
    Token,
    /// Empty, too large, or not a whole number of AES blocks plus the MAC.
    #[error("{0}")]
    Body(String),
}

#[derive(Debug, Clone)]
struct Upload {
    media_type: String,
    enc: Vec<u8>,
    enc_sha256: [u8; 32],
}

/// What a verified media message carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Hex SHA-256 of the plaintext.
    pub sha256: String,
    /// Plaintext size in bytes.
    pub size: u64,
    /// The audio codec found in the plaintext, if it is audio the server knows.
    pub codec: Option<&'static str>,
}

/// Completed uploads, by direct path.
#[derive(Debug, Default)]
pub struct MediaStore {
    uploads: BTreeMap<String, Upload>,
    order: VecDeque<String>,
    bytes: usize,
    /// The `media_download` fault: downloads fail this way while set.
    download_fault: Option<DownloadFault>,
}

/// How downloads from the media server fail while the `media_download` fault is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownloadFault {
    /// The media server answers 500.
    Fail,
    /// The media server answers 410: the file expired (WhatsApp keeps media for a limited
    /// time; the phone would have to re-upload it).
    Expired,
}

/// The media fields of an inbound message, as WhatsApp's message carries them after the
/// sender's upload (all base64 but the path).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InboundMedia {
    /// The media type (`image`, `video`, `audio`, `document`).
    #[serde(rename = "type")]
    pub media_type: String,
    /// Where the media server keeps the encrypted file.
    pub direct_path: String,
    /// The 32-byte media key.
    pub media_key: String,
    /// Seconds since the epoch of the key.
    pub media_key_timestamp: u64,
    /// SHA-256 of the encrypted file.
    pub enc_filehash: String,
    /// SHA-256 of the plaintext.
    pub filehash: String,
    /// Plaintext size.
    pub size: u64,
}

/// The media type WhatsApp gives a file of `mimetype` sent without options.
pub fn media_type_of(mimetype: &str) -> &'static str {
    let m = mimetype.to_ascii_lowercase();
    if m.starts_with("image/") {
        "image"
    } else if m.starts_with("video/") {
        "video"
    } else if m.starts_with("audio/") {
        "audio"
    } else {
        "document"
    }
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

impl MediaStore {
    /// Keeps an upload; returns its direct path. `token` must be the base64url (no padding)
    /// SHA-256 of `body`, as in WhatsApp's upload URLs. `nonce` makes the path unique.
    pub fn put(
        &mut self,
        media_type: &str,
        token: &str,
        body: Vec<u8>,
        nonce: u64,
    ) -> Result<String, UploadError> {
        if info_of(media_type).is_none() {
            return Err(UploadError::Type(media_type.to_owned()));
        }
        if body.len() > MAX_UPLOAD_BYTES {
            return Err(UploadError::Body(format!(
                "an upload is at most {MAX_UPLOAD_BYTES} bytes"
            )));
        }
        if body.len() < 26 || !(body.len() - 10).is_multiple_of(16) {
            return Err(UploadError::Body(
                "an upload is AES-CBC blocks followed by a 10-byte MAC".into(),
            ));
        }
        let hash: [u8; 32] = Sha256::digest(&body).into();
        if base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash) != token {
            return Err(UploadError::Token);
        }
        let path = format!(
            "{DIRECT_PATH_PREFIX}{}_{nonce:016x}.enc",
            hex::encode(&hash[..12])
        );
        self.bytes += body.len();
        self.uploads.insert(
            path.clone(),
            Upload {
                media_type: media_type.to_owned(),
                enc: body,
                enc_sha256: hash,
            },
        );
        self.order.push_back(path.clone());
        while self.bytes > MAX_STORE_BYTES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(u) = self.uploads.remove(&old) {
                self.bytes -= u.enc.len();
            }
        }
        Ok(path)
    }

    /// Encrypts `plain` with `media_key` the way a sending phone does and keeps it like an
    /// upload, for an inbound message that references it. `nonce` makes the path unique.
    pub fn put_inbound(
        &mut self,
        plain: &[u8],
        media_type: &str,
        media_key: &[u8; 32],
        nonce: u64,
        now_secs: u64,
    ) -> Result<InboundMedia, UploadError> {
        if plain.is_empty() || plain.len() > MAX_MEDIA_BYTES {
            return Err(UploadError::Body(format!(
                "media data is 1 to {MAX_MEDIA_BYTES} bytes"
            )));
        }
        let file = encrypt(plain, media_key, media_type)
            .ok_or_else(|| UploadError::Type(media_type.to_owned()))?;
        let enc_hash = Sha256::digest(&file);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(enc_hash);
        let direct_path = self.put(media_type, &token, file, nonce)?;
        Ok(InboundMedia {
            media_type: media_type.to_owned(),
            direct_path,
            media_key: b64(media_key),
            media_key_timestamp: now_secs,
            enc_filehash: b64(&enc_hash),
            filehash: b64(&Sha256::digest(plain)),
            size: plain.len() as u64,
        })
    }

    /// Sets (or with `None` clears) the `media_download` fault.
    pub fn set_download_fault(&mut self, fault: Option<DownloadFault>) {
        self.download_fault = fault;
    }

    /// The `media_download` fault, if set.
    pub fn download_fault(&self) -> Option<DownloadFault> {
        self.download_fault
    }

    /// `GET <direct path>?hash=<token>`: the encrypted file, when `token` is the base64url
    /// SHA-256 of it (as WhatsApp's download URLs carry it); `None` answers 404.
    pub fn download(&self, direct_path: &str, token: &str) -> Option<&[u8]> {
        let up = self.uploads.get(direct_path)?;
        (base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(up.enc_sha256) == token)
            .then_some(up.enc.as_slice())
    }

    /// Checks a media message against the uploads (see the module docs).
    pub fn verify(&self, m: &OutMsg) -> Result<Verified, String> {
        let path = m
            .direct_path
            .as_deref()
            .ok_or("a media message needs the directPath of a completed upload")?;
        let up = self
            .uploads
            .get(path)
            .ok_or("directPath names no completed upload")?;
        let kind = m.kind.as_str();
        let compatible = up.media_type == kind
            || (up.media_type == "gif" && kind == "video")
            || (up.media_type == "image" && kind == "sticker");
        if !compatible {
            return Err(format!(
                "the upload is {:?} media, the message {kind:?}",
                up.media_type
            ));
        }
        if m.enc_filehash.as_deref() != Some(b64(&up.enc_sha256).as_str()) {
            return Err("encFilehash does not match the upload".into());
        }
        let key = m
            .media_key
            .as_deref()
            .and_then(|k| base64::engine::general_purpose::STANDARD.decode(k).ok())
            .filter(|k| k.len() == 32)
            .ok_or("mediaKey must be base64 of 32 bytes")?;
        let info = info_of(&up.media_type).ok_or("unknown media type")?;
        let k = expand(&key, info);
        let (enc, mac) = up.enc.split_at(up.enc.len() - 10);
        let mut h = <HmacSha256 as Mac>::new_from_slice(&k[48..80]).map_err(|e| e.to_string())?;
        h.update(&k[..16]);
        h.update(enc);
        if h.finalize().into_bytes()[..10] != *mac {
            return Err("the upload's MAC does not match this mediaKey".into());
        }
        let mut buf = enc.to_vec();
        let plain = cbc::Decryptor::<aes::Aes256>::new_from_slices(&k[16..48], &k[..16])
            .map_err(|e| e.to_string())?
            .decrypt_padded_mut::<Pkcs7>(&mut buf)
            .map_err(|_| "the upload does not decrypt with this mediaKey")?;
        let digest = Sha256::digest(plain);
        if m.filehash.as_deref() != Some(b64(&digest).as_str()) {
            return Err("filehash does not match the decrypted upload".into());
        }
        let size = plain.len() as u64;
        if m.size.is_some_and(|s| s != size) {
            return Err(format!(
                "size says {} bytes, the media has {size}",
                m.size.unwrap_or(0)
            ));
        }
        Ok(Verified {
            sha256: hex::encode(digest),
            size,
            codec: super::send_types::audio_codec(plain),
        })
    }
}

// === impl Sim (the media server's part of the simulated servers) ===

impl super::Sim {
    /// The media of an inbound message: decoded, encrypted with a fresh key and kept on the
    /// media server, as the sender's phone would upload it. `None` for a text message.
    pub(super) fn inbound_media(
        &mut self,
        m: &super::Inbound,
        media_type: Option<&'static str>,
        now: u64,
    ) -> Result<Option<super::MsgMedia>, super::PhoneError> {
        use rand::Rng as _;
        let Some(req) = &m.media else {
            if m.caption.is_some() {
                return Err(bad("a caption goes with media"));
            }
            return Ok(None);
        };
        let mimetype = req.mimetype.trim();
        if mimetype.is_empty() || mimetype.len() > 128 || !mimetype.contains('/') {
            return Err(bad(
                "media.mimetype is a type/subtype of at most 128 characters",
            ));
        }
        if req
            .filename
            .as_ref()
            .is_some_and(|f| f.is_empty() || f.len() > 255)
        {
            return Err(bad("media.filename is 1 to 255 bytes"));
        }
        if m.caption
            .as_ref()
            .is_some_and(|c| c.len() > super::MAX_TEXT_BYTES)
        {
            return Err(bad("caption is too long"));
        }
        let plain = base64::engine::general_purpose::STANDARD
            .decode(req.data.as_bytes())
            .map_err(|_| bad("media.data is base64"))?;
        // The asked type (a voice note is `ptt`, a sticker `sticker`), else the mimetype's.
        let media_type = media_type.unwrap_or_else(|| media_type_of(mimetype));
        let key: [u8; 32] = self.rng.random();
        let nonce = self.rng.random::<u64>();
        let file = self
            .media
            .put_inbound(&plain, media_type, &key, nonce, now / 1000)
            .map_err(|e| bad(&e.to_string()))?;
        Ok(Some(super::MsgMedia {
            file,
            mimetype: mimetype.to_owned(),
            filename: req.filename.clone(),
            caption: m.caption.clone(),
        }))
    }

    /// The media server's `GET <direct path>?hash=`: the encrypted file, or why not (the
    /// `media_download` fault, or 404 for an unknown path or a wrong hash).
    pub fn media_download(&self, direct_path: &str, token: &str) -> Result<Vec<u8>, u16> {
        match self.media.download_fault() {
            Some(DownloadFault::Fail) => return Err(500),
            Some(DownloadFault::Expired) => return Err(410),
            None => {}
        }
        self.media
            .download(direct_path, token)
            .map(<[u8]>::to_vec)
            .ok_or(404)
    }

    /// Sets (or with `None` clears) the `media_download` fault.
    pub fn set_download_fault(&mut self, fault: Option<DownloadFault>) {
        self.media.set_download_fault(fault);
    }

    /// The `media_download` fault, if set.
    pub fn download_fault(&self) -> Option<DownloadFault> {
        self.media.download_fault()
    }
}

fn bad(msg: &str) -> super::PhoneError {
    super::PhoneError::Invalid("invalid_media", msg.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(path: &str, file: &[u8], key: &[u8; 32], plain: &[u8]) -> OutMsg {
        OutMsg {
            kind: "image".into(),
            direct_path: Some(path.into()),
            enc_filehash: Some(b64(&Sha256::digest(file))),
            media_key: Some(b64(key)),
            filehash: Some(b64(&Sha256::digest(plain))),
            size: Some(plain.len() as u64),
            ..OutMsg::default()
        }
    }

    #[test]
    fn inbound_media_downloads_by_path_and_hash_and_decrypts_to_its_filehash() {
        let mut store = MediaStore::default();
        let plain = b"a picture, in bytes".to_vec();
        let key = [3u8; 32];
        let m = store.put_inbound(&plain, "image", &key, 9, 100).unwrap();
        assert_eq!(m.size, plain.len() as u64);
        assert_eq!(m.filehash, b64(&Sha256::digest(&plain)));
        let token = b64(&base64::engine::general_purpose::STANDARD
            .decode(&m.enc_filehash)
            .unwrap())
        .replace('+', "-")
        .replace('/', "_")
        .trim_end_matches('=')
        .to_owned();
        let file = store.download(&m.direct_path, &token).unwrap().to_vec();
        assert!(store.download(&m.direct_path, "wrong").is_none());
        let out = OutMsg {
            kind: "image".into(),
            direct_path: Some(m.direct_path.clone()),
            enc_filehash: Some(m.enc_filehash.clone()),
            media_key: Some(m.media_key.clone()),
            filehash: Some(m.filehash.clone()),
            size: Some(m.size),
            ..OutMsg::default()
        };
        assert_eq!(store.verify(&out).unwrap().size, plain.len() as u64);
        assert_eq!(file.len() % 16, 10);
        assert!(store.put_inbound(b"", "image", &key, 1, 1).is_err());
        assert_eq!(media_type_of("image/PNG"), "image");
        assert_eq!(media_type_of("application/pdf"), "document");
    }

    #[test]
    fn an_upload_verifies_only_with_its_key_and_hashes() {
        let plain = b"\x89PNG not really a png, but bytes".to_vec();
        let key = [7u8; 32];
        let file = encrypt(&plain, &key, "image").unwrap();
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(&file));
        let mut store = MediaStore::default();
        assert_eq!(
            store.put("image", "wrong", file.clone(), 1),
            Err(UploadError::Token)
        );
        let path = store.put("image", &token, file.clone(), 1).unwrap();
        let ok = store.verify(&msg(&path, &file, &key, &plain)).unwrap();
        assert_eq!(ok.sha256, hex::encode(Sha256::digest(&plain)));
        assert_eq!(ok.size, plain.len() as u64);

        let mut bad = msg(&path, &file, &[8u8; 32], &plain);
        assert!(store.verify(&bad).unwrap_err().contains("MAC"));
        bad = msg(&path, &file, &key, b"other bytes");
        assert!(store.verify(&bad).unwrap_err().contains("filehash"));
        bad = msg("/v/t62.7118-24/none.enc", &file, &key, &plain);
        assert!(
            store
                .verify(&bad)
                .unwrap_err()
                .contains("no completed upload")
        );
        bad = msg(&path, &file, &key, &plain);
        bad.kind = "document".into();
        assert!(store.verify(&bad).is_err());
    }
}
