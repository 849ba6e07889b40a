//! LID addressing and groups: every simulated account has a deterministic LID, and groups the
//! control API creates, with their addressing mode.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::wire::Mapping;

/// Most groups the simulator keeps.
pub const MAX_GROUPS: usize = 1_000;
/// Most participants of one group.
pub const MAX_GROUP_PARTICIPANTS: usize = 256;
/// Longest group subject, in bytes.
pub const MAX_SUBJECT_BYTES: usize = 100;

/// The LID (the digits before `@lid`) of a phone: 15 digits derived from the number, so every
/// run and every test agrees on it. WhatsApp's LIDs are opaque 15-digit numbers too.
pub fn lid_of(phone: &str) -> String {
    let h = Sha256::digest(format!("wafleet-sim-lid:{phone}").as_bytes());
    let mut n = [0u8; 8];
    n.copy_from_slice(&h[..8]);
    // 10^14 .. 10^15 - 1: always 15 digits, never a leading zero.
    let v = u64::from_be_bytes(n) % 900_000_000_000_000 + 100_000_000_000_000;
    v.to_string()
}

/// The PN↔LID mapping of a phone, as the page learns it.
pub(crate) fn mapping_of(phone: &str) -> Mapping {
    Mapping {
        pn: format!("{phone}@c.us"),
        lid: format!("{}@lid", lid_of(phone)),
    }
}

/// A group created with `POST /sim/groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Group {
    /// `<digits>-<digits>@g.us`.
    pub id: String,
    /// The subject.
    pub subject: String,
    /// Phones of the participants.
    pub participants: Vec<String>,
    /// Whether members are addressed by LID (`groupMetadata.isLidAddressingMode`).
    pub lid_addressing: bool,
    /// Creation, seconds since the epoch.
    pub creation: u64,
    /// The creator's phone (the super admin), if the creator is still known.
    #[serde(default)]
    pub owner: Option<String>,
    /// Phones of the admins (the owner included).
    #[serde(default)]
    pub admins: Vec<String>,
    /// The description (`groupMetadata.desc`), empty for none.
    #[serde(default)]
    pub description: String,
    /// The current invite code (`groupMetadata.inviteCode`), made on first request.
    #[serde(default)]
    pub invite: Option<String>,
}

impl Group {
    /// The wid of a member as this group addresses it.
    pub(crate) fn member_wid(&self, phone: &str) -> String {
        if self.lid_addressing {
            format!("{}@lid", lid_of(phone))
        } else {
            format!("{phone}@c.us")
        }
    }

    /// What a page is told about the group.
    pub(crate) fn view(&self) -> super::wire::GroupView {
        super::wire::GroupView {
            id: self.id.clone(),
            subject: self.subject.clone(),
            participants: self
                .participants
                .iter()
                .map(|p| self.member_wid(p))
                .collect(),
            lid_addressing: self.lid_addressing,
            creation: self.creation,
            mappings: self.participants.iter().map(|p| mapping_of(p)).collect(),
            owner: self.owner.as_deref().map(|p| self.member_wid(p)),
            admins: self.admins.iter().map(|p| self.member_wid(p)).collect(),
            desc: self.description.clone(),
        }
    }
}

/// Whether `s` is a group wid as the simulator makes them: `<digits>-<digits>@g.us`.
pub(crate) fn valid_group_wid(s: &str) -> bool {
    let Some(user) = s.strip_suffix("@g.us") else {
        return false;
    };
    let mut parts = user.splitn(2, '-');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| (1..=20).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
    };
    ok(parts.next()) && ok(parts.next())
}

/// Phones known by their LID (every phone the simulator has seen), for `@lid` recipients.
#[derive(Debug, Default)]
pub(crate) struct LidBook {
    by_lid: BTreeMap<String, String>,
}

/// Most LIDs remembered (linked phones, senders, group members).
const MAX_LIDS: usize = 100_000;

impl LidBook {
    /// Remembers a phone; returns its LID.
    pub(crate) fn learn(&mut self, phone: &str) -> String {
        let lid = lid_of(phone);
        if self.by_lid.len() < MAX_LIDS || self.by_lid.contains_key(&lid) {
            self.by_lid.insert(lid.clone(), phone.to_owned());
        }
        lid
    }

    /// The phone of a LID (digits only), if known.
    pub(crate) fn phone_of(&self, lid: &str) -> Option<&str> {
        self.by_lid.get(lid).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lids_are_fifteen_digits_and_stable() {
        let a = lid_of("4915550001");
        assert_eq!(a.len(), 15);
        assert!(a.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(a, lid_of("4915550001"));
        assert_ne!(a, lid_of("4915550002"));
    }

    #[test]
    fn group_wids() {
        assert!(valid_group_wid("4915550001-1700000000@g.us"));
        assert!(!valid_group_wid("4915550001@g.us"));
        assert!(!valid_group_wid("49-x@g.us"));
        assert!(!valid_group_wid("49-1@c.us"));
    }
}
