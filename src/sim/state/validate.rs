//! Input checks of the simulated servers.

use super::*;

// === validation ===

/// Whether `s` is a phone number as the simulator accepts it: 5 to 20 ASCII digits.
pub fn valid_phone(s: &str) -> bool {
    (5..=20).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

pub(crate) fn check_phone(s: &str) -> Result<(), PhoneError> {
    if valid_phone(s) {
        Ok(())
    } else {
        Err(PhoneError::Invalid(
            "invalid_phone",
            "phone must be 5 to 20 digits".into(),
        ))
    }
}

pub(crate) fn wid_of(phone: &str) -> String {
    format!("{phone}@c.us")
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn b64_32(s: &str) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .is_ok_and(|b| b.len() == 32)
}

pub(crate) fn validate_keys(k: &DeviceKeys) -> Result<(), String> {
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

/// How a send addresses the chat and me, and what it must carry.
struct Addressing {
    /// What `/sim/messages` shows as `to`.
    to: String,
    /// `pn` or `lid`.
    mode: &'static str,
    /// The `from` the message must carry.
    from: String,
    /// The `participant` it must carry (groups).
    participant: Option<String>,
}

impl Sim {
    /// Works out the addressing rules of a send from `phone` to `to` (WhatsApp's: the LID user
    /// for `@lid` chats and LID-addressed groups, else the PN user; groups need a participant).
    fn addressing(&self, phone: &str, to: &str) -> Result<Addressing, String> {
        let (user, server) = to
            .split_once('@')
            .ok_or("to must be <digits>@c.us, <lid>@lid or a group wid")?;
        let me_pn = wid_of(phone);
        let me_lid = format!("{}@lid", lid_of(phone));
        match server {
            "c.us" if valid_phone(user) => Ok(Addressing {
                to: user.to_owned(),
                mode: "pn",
                from: me_pn,
                participant: None,
            }),
            "lid" if user.len() == 15 && user.bytes().all(|b| b.is_ascii_digit()) => {
                let peer = self.lids.phone_of(user).ok_or("no account has this LID")?;
                Ok(Addressing {
                    to: peer.to_owned(),
                    mode: "lid",
                    from: me_lid,
                    participant: None,
                })
            }
            "g.us" if addressing::valid_group_wid(to) => {
                let g = self.groups.get(to).ok_or("no such group")?;
                if !g.participants.iter().any(|p| p == phone) {
                    return Err("you are not a participant of this group".into());
                }
                let me = g.member_wid(phone);
                Ok(Addressing {
                    to: to.to_owned(),
                    mode: if g.lid_addressing { "lid" } else { "pn" },
                    from: me.clone(),
                    participant: Some(me),
                })
            }
            _ => Err("to must be <digits>@c.us, <lid>@lid or a group wid".into()),
        }
    }

    /// Checks an outbound message of `phone` the way WhatsApp's servers would: addressing,
    /// id, text limits, and for media a completed upload matching every hash and the key.
    pub(super) fn check_send(&self, phone: &str, m: &OutMsg, now: u64) -> Result<SentView, String> {
        let a = self.addressing(phone, &m.to)?;
        match (&m.from, a.mode) {
            (None, _) => return Err("the message has no from".into()),
            (Some(f), "lid") if *f != a.from => {
                return Err(format!(
                    "from must be your LID user {} for this chat, not {f}",
                    a.from
                ));
            }
            (Some(f), _) if *f != a.from => {
                return Err(format!("from must be {}, not {f}", a.from));
            }
            _ => {}
        }
        match (&a.participant, &m.participant) {
            (Some(_), None) => return Err("a group message needs a participant".into()),
            (Some(want), Some(got)) if want != got => {
                return Err(format!("participant must be {want}, not {got}"));
            }
            (None, Some(_)) => return Err("only group messages have a participant".into()),
            _ => {}
        }
        let prefix = format!("true_{}_", m.to);
        let rest =
            m.id.strip_prefix(&prefix)
                .ok_or("id must be true_<to>_<key id>[_<participant>]")?;
        let key = match &a.participant {
            Some(p) => rest
                .strip_suffix(&format!("_{p}"))
                .ok_or("a group message id ends with _<participant>")?,
            None => rest,
        };
        if key.is_empty() || key.len() > 64 || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err("the key id must be 1 to 64 letters or digits".into());
        }
        let kind = if m.kind.is_empty() { "chat" } else { &m.kind };
        let text = if kind == "chat" {
            m.body.clone()
        } else {
            m.caption.clone()
        };
        if text.as_ref().is_some_and(|t| t.len() > MAX_TEXT_BYTES) {
            return Err(format!("text is limited to {MAX_TEXT_BYTES} bytes"));
        }
        let mut media_codec = None;
        let (media, uploaded, sha256) = match kind {
            "chat" => {
                if text.is_none() {
                    return Err("a chat message needs a body".into());
                }
                (None, None, None)
            }
            "image" | "video" | "audio" | "ptt" | "document" | "sticker" => {
                if m.data.is_some() || m.body.as_deref().is_some_and(|b| b.starts_with("data:")) {
                    return Err(
                        "inline media is refused: upload it through the media pipeline".into(),
                    );
                }
                let mimetype = m
                    .mimetype
                    .clone()
                    .filter(|t| !t.is_empty() && t.len() <= 255 && t.contains('/'))
                    .ok_or("a media message needs a mimetype like image/png")?;
                if m.filename.as_ref().is_some_and(|f| f.len() > 255) {
                    return Err("filename is limited to 255 bytes".into());
                }
                let v = self.media.verify(m)?;
                media_codec = v.codec;
                let info = MediaInfo {
                    mimetype,
                    filename: m.filename.clone(),
                    size: Some(v.size),
                    sha256: Some(v.sha256.clone()),
                };
                (Some(info), Some(true), Some(v.sha256))
            }
            "location" | "vcard" | "poll_creation" | "reaction" | "protocol" => (None, None, None),
            other => return Err(format!("unsupported message type {other:?}")),
        };
        let mut extra = self.check_extras(phone, m, kind)?;
        if kind == "ptt" {
            extra.ptt = Some(true);
        }
        if matches!(kind, "ptt" | "audio") {
            extra.codec = media_codec.map(str::to_owned);
        }
        Ok(SentView {
            id: m.id.clone(),
            to: a.to,
            kind: kind.to_owned(),
            text,
            media,
            uploaded,
            sha256,
            participant: a.participant,
            addressing: a.mode.into(),
            ack: 1,
            refused: None,
            timestamp: now,
            extra,
        })
    }
}
