//! The group server of the simulated WhatsApp: the IQs WhatsApp Web's group jobs send (create,
//! participants add/remove/promote/demote, invite code and reset, leave, subject, description),
//! the `w:gp2` notifications every member's pages get for each change, and the phone side
//! (`POST /sim/groups/{id}/participants`: a member's phone changes the group, so a session sees
//! a change made by someone else).
//!
//! The rules are WhatsApp's as its clients see them: only admins change members and invite
//! links (`403`, `401` for the invite code, as `WAWebGroupInviteAction` answers a non-admin);
//! per participant `200` done, `404` not a member (or, for add, not on WhatsApp: reported in
//! `invitedOutContacts`, as WhatsApp does), `409` already a member, `403` the owner cannot be
//! removed or demoted; a subject over 100 characters or a description over 2048 is refused
//! with `406` (not-acceptable).

use serde::Serialize;
use serde_json::{Value, json};

use super::addressing::{self, Group, MAX_SUBJECT_BYTES};
use super::{ConnId, Effect, Phase, PhoneError, ServerMsg, Sim, check_phone, lid_of};
use rand::Rng;

/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 2048;
/// Longest subject, in characters.
pub const MAX_SUBJECT_CHARS: usize = 100;
const INVITE_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A group IQ failure: status and text (the page rejects with `ServerStatusCodeError`).
type IqError = (u16, String);

/// `GET /sim/groups/{id}`: a group as the servers hold it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupState {
    /// The group.
    #[serde(flatten)]
    pub group: Group,
}

/// One participant's answer of a phone-side change (`POST /sim/groups/{id}/participants`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PhoneChange {
    /// The phone.
    pub phone: String,
    /// WhatsApp's code for it.
    pub code: u16,
}

/// The participant ops.
const MEMBER_OPS: [&str; 4] = ["add", "remove", "promote", "demote"];

impl Sim {
    fn is_known_account(&self, phone: &str) -> bool {
        self.lids.phone_of(&lid_of(phone)) == Some(phone)
    }

    /// The phone behind a user wid (`<digits>@c.us`, or a LID the servers know).
    fn phone_of_wid(&self, wid: &str) -> Option<String> {
        let (user, server) = wid.split_once('@')?;
        match server {
            "c.us" if super::valid_phone(user) => Some(user.to_owned()),
            "lid" => self.lids.phone_of(user).map(str::to_owned),
            _ => None,
        }
    }

    fn conn_phone(&self, conn: ConnId) -> Option<String> {
        self.conns
            .get(&conn)
            .filter(|c| c.phase == Phase::Connected)
            .and_then(|c| c.device.as_ref())
            .and_then(|d| self.devices.get(d))
            .map(|d| d.phone.clone())
    }

    fn invite_code(&mut self) -> String {
        (0..22)
            .map(|_| INVITE_ALPHABET[self.rng.random_range(0..INVITE_ALPHABET.len())] as char)
            .collect()
    }

    /// Tells every online page of `phones` about a change of group `gid`.
    fn notify_group(
        &mut self,
        gid: &str,
        phones: &[String],
        subtype: &str,
        recipients: &[String],
        author: Option<&str>,
        now: u64,
    ) {
        let Some(g) = self.groups.get(gid) else {
            return;
        };
        let view = g.view();
        let recipients: Vec<String> = recipients.iter().map(|p| g.member_wid(p)).collect();
        let author = author.map(|p| g.member_wid(p));
        let id = format!("{:016X}", self.rng.random::<u64>());
        let mut targets: Vec<String> = phones.to_vec();
        targets.sort();
        targets.dedup();
        for p in targets {
            for c in self.online_conns_of_phone(&p) {
                self.effects.push(Effect::Send(
                    c,
                    ServerMsg::GroupNotice {
                        id: id.clone(),
                        group: view.clone(),
                        subtype: subtype.to_owned(),
                        recipients: recipients.clone(),
                        author: author.clone(),
                        ts: now / 1000,
                    },
                ));
            }
        }
    }

    /// A page's group IQ (see the module doc for the rules).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn group_iq(
        &mut self,
        conn: ConnId,
        req: u64,
        op: &str,
        group: Option<String>,
        participants: Vec<String>,
        value: Option<String>,
        now: u64,
    ) {
        let answer = match self.conn_phone(conn) {
            None => Err((401, "not connected".to_owned())),
            Some(me) => self.run_iq(&me, op, group, participants, value, now),
        };
        let msg = match answer {
            Ok(result) => ServerMsg::GroupResult { req, result },
            Err((code, text)) => ServerMsg::GroupError { req, code, text },
        };
        self.effects.push(Effect::Send(conn, msg));
    }

    fn run_iq(
        &mut self,
        me: &str,
        op: &str,
        group: Option<String>,
        participants: Vec<String>,
        value: Option<String>,
        now: u64,
    ) -> Result<Value, IqError> {
        if op == "create" {
            return self.iq_create(me, &participants, value.as_deref().unwrap_or(""), now);
        }
        let gid = group.ok_or((400, "bad-request: no group".to_owned()))?;
        let g = self
            .groups
            .get(&gid)
            .ok_or((404, "item-not-found".to_owned()))?;
        if !g.participants.iter().any(|p| p == me) {
            return Err((403, "forbidden: not a participant".to_owned()));
        }
        let is_admin = g.admins.iter().any(|p| p == me);
        match op {
            _ if MEMBER_OPS.contains(&op) => {
                if !is_admin {
                    return Err((403, "not-authorized".to_owned()));
                }
                let mut phones = Vec::new();
                let mut unknown = Vec::new();
                for w in &participants {
                    match self.phone_of_wid(w) {
                        Some(p) => phones.push(p),
                        None => unknown.push(w.clone()),
                    }
                }
                let (done, results) = self.change_members(&gid, op, &phones, me, now);
                let g = &self.groups[&gid];
                let mut list: Vec<Value> = Vec::new();
                let mut invited: Vec<Value> = Vec::new();
                for (p, code) in results {
                    if op == "add" && code == 404 {
                        invited.push(json!({"phoneNumberWid": format!("{p}@c.us"), "code": "200"}));
                    } else {
                        list.push(json!({"userWid": g.member_wid(&p), "code": code.to_string()}));
                    }
                }
                for w in unknown {
                    list.push(json!({"userWid": w, "code": "404"}));
                }
                let _ = done;
                Ok(json!({"status": 207, "participants": list, "invitedOutContacts": invited}))
            }
            "invite" | "invite_reset" => {
                if !is_admin {
                    return Err((401, "not-authorized".to_owned()));
                }
                let reset = op == "invite_reset" || self.groups[&gid].invite.is_none();
                if reset {
                    let code = self.invite_code();
                    if let Some(g) = self.groups.get_mut(&gid) {
                        g.invite = Some(code);
                    }
                }
                Ok(json!({"code": self.groups[&gid].invite}))
            }
            "leave" => {
                let before = self.groups[&gid].participants.clone();
                if let Some(g) = self.groups.get_mut(&gid) {
                    g.participants.retain(|p| p != me);
                    g.admins.retain(|p| p != me);
                    if g.owner.as_deref() == Some(me) {
                        g.owner = None;
                    }
                }
                self.notify_group(&gid, &before, "leave", &[me.to_owned()], Some(me), now);
                Ok(json!({}))
            }
            "subject" => {
                let s = value.unwrap_or_default();
                let n = s.trim().chars().count();
                if n == 0
                    || s.chars().count() > MAX_SUBJECT_CHARS
                    || s.len() > MAX_SUBJECT_BYTES * 4
                {
                    return Err((406, "not-acceptable: subject".to_owned()));
                }
                let members = self.groups[&gid].participants.clone();
                if let Some(g) = self.groups.get_mut(&gid) {
                    g.subject = s;
                }
                self.notify_group(&gid, &members, "subject", &[], Some(me), now);
                Ok(json!({}))
            }
            "description" => {
                let d = value.unwrap_or_default();
                if d.chars().count() > MAX_DESCRIPTION_CHARS {
                    return Err((406, "not-acceptable: description".to_owned()));
                }
                let members = self.groups[&gid].participants.clone();
                if let Some(g) = self.groups.get_mut(&gid) {
                    g.description = d;
                }
                self.notify_group(&gid, &members, "description", &[], Some(me), now);
                Ok(json!({}))
            }
            other => Err((400, format!("bad-request: unknown op {other}"))),
        }
    }

    fn iq_create(
        &mut self,
        me: &str,
        participants: &[String],
        subject: &str,
        now: u64,
    ) -> Result<Value, IqError> {
        let n = subject.trim().chars().count();
        if n == 0 || subject.chars().count() > MAX_SUBJECT_CHARS {
            return Err((406, "not-acceptable: subject".to_owned()));
        }
        if participants.is_empty() || participants.len() > addressing::MAX_GROUP_PARTICIPANTS {
            return Err((400, "bad-request: participants".to_owned()));
        }
        if self.groups.len() >= addressing::MAX_GROUPS {
            return Err((500, "internal-server-error: too many groups".to_owned()));
        }
        let mut members = vec![me.to_owned()];
        let mut answers = Vec::new();
        let mut invited = Vec::new();
        for w in participants {
            match self.phone_of_wid(w) {
                Some(p) if self.is_known_account(&p) => {
                    if !members.contains(&p) {
                        members.push(p.clone());
                    }
                    answers.push(json!({"wid": format!("{p}@c.us"), "error": null}));
                }
                Some(p) => {
                    invited.push(json!({"phoneNumberWid": format!("{p}@c.us"), "code": "200"}))
                }
                None => answers.push(json!({"wid": w, "error": 404})),
            }
        }
        let id = format!(
            "{me}-{}@g.us",
            self.rng.random_range(1_000_000_000u64..10_000_000_000)
        );
        self.groups.insert(
            id.clone(),
            Group {
                id: id.clone(),
                subject: subject.to_owned(),
                participants: members.clone(),
                lid_addressing: false,
                creation: now / 1000,
                owner: Some(me.to_owned()),
                admins: vec![me.to_owned()],
                description: String::new(),
                invite: None,
            },
        );
        let added: Vec<String> = members.iter().skip(1).cloned().collect();
        self.notify_group(&id, &members, "create", &added, Some(me), now);
        Ok(json!({
            "wid": id,
            "subject": subject,
            "creator": format!("{me}@c.us"),
            "ts": now / 1000,
            "participants": answers,
            "invitedOutContacts": invited,
        }))
    }

    /// Applies a member op by `actor` (an admin) and notifies; answers whether anything
    /// changed and the code per phone.
    fn change_members(
        &mut self,
        gid: &str,
        op: &str,
        phones: &[String],
        actor: &str,
        now: u64,
    ) -> (bool, Vec<(String, u16)>) {
        let before = self.groups[gid].participants.clone();
        let mut results = Vec::new();
        let mut changed = Vec::new();
        for p in phones {
            let known = self.is_known_account(p);
            let Some(g) = self.groups.get_mut(gid) else {
                break;
            };
            let member = g.participants.contains(p);
            let owner = g.owner.as_deref() == Some(p.as_str());
            let code = match op {
                "add" if member => 409,
                "add" if !known => 404,
                "add" if g.participants.len() >= addressing::MAX_GROUP_PARTICIPANTS => 500,
                "add" => {
                    g.participants.push(p.clone());
                    200
                }
                _ if !member => 404,
                "remove" | "demote" if owner => 403,
                "remove" => {
                    g.participants.retain(|x| x != p);
                    g.admins.retain(|x| x != p);
                    200
                }
                "promote" => {
                    if !g.admins.contains(p) {
                        g.admins.push(p.clone());
                    }
                    200
                }
                _ => {
                    g.admins.retain(|x| x != p);
                    200
                }
            };
            if code == 200 {
                changed.push(p.clone());
                if op == "add" {
                    self.lids.learn(p);
                }
            }
            results.push((p.clone(), code));
        }
        if !changed.is_empty() {
            let mut audience = before;
            audience.extend(changed.iter().cloned());
            self.notify_group(gid, &audience, op, &changed, Some(actor), now);
        }
        (!changed.is_empty(), results)
    }

    /// `POST /sim/groups/{id}/participants`: a member's phone (`by`, default the owner) adds,
    /// removes, promotes or demotes `phones`, as if from the phone's own app.
    pub fn phone_change_members(
        &mut self,
        gid: &str,
        action: &str,
        phones: &[String],
        by: Option<&str>,
        now: u64,
    ) -> Result<Vec<PhoneChange>, PhoneError> {
        if !MEMBER_OPS.contains(&action) {
            return Err(PhoneError::Invalid(
                "invalid_action",
                "action is add, remove, promote or demote".into(),
            ));
        }
        if phones.is_empty() || phones.len() > addressing::MAX_GROUP_PARTICIPANTS {
            return Err(PhoneError::Invalid(
                "invalid_participants",
                "participants are 1 to 256 phones".into(),
            ));
        }
        for p in phones {
            check_phone(p)?;
        }
        let g = self
            .groups
            .get(gid)
            .ok_or_else(|| PhoneError::NotFound("unknown_group", format!("no group {gid}")))?;
        let actor = match by {
            Some(b) => b.to_owned(),
            None => g.owner.clone().ok_or_else(|| {
                PhoneError::Conflict("no_owner", "the group has no owner; give by".into())
            })?,
        };
        check_phone(&actor)?;
        if !g.admins.contains(&actor) {
            return Err(PhoneError::Conflict(
                "not_admin",
                format!("{actor} is not an admin of {gid}"),
            ));
        }
        if action == "add" {
            for p in phones {
                self.lids.learn(p);
            }
        }
        let (_, results) = self.change_members(gid, action, phones, &actor, now);
        Ok(results
            .into_iter()
            .map(|(phone, code)| PhoneChange { phone, code })
            .collect())
    }

    /// `GET /sim/groups/{id}`.
    pub fn group_state(&self, gid: &str) -> Result<GroupState, PhoneError> {
        self.groups
            .get(gid)
            .map(|g| GroupState { group: g.clone() })
            .ok_or_else(|| PhoneError::NotFound("unknown_group", format!("no group {gid}")))
    }
}
