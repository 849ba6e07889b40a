//! The phone side of the simulated servers (the control API): linking, inbound messages,
//! unlink, faults, web versions and the devices view.

use super::content;
use super::*;

mod devices;

mod inbound;

impl Sim {
    // --- phone side (control API) ---

    /// `/sim/link`: the phone scanned a QR string.
    pub fn link_qr(
        &mut self,
        qr: &str,
        phone: &str,
        name: Option<&str>,
        now: u64,
    ) -> Result<LinkOutcome, PhoneError> {
        check_phone(phone)?;
        let conn = self.check_qr(qr)?;
        Ok(self.link_or_passkey(conn, phone, name, now))
    }

    /// Checks a QR string the way the phone does before linking (`/sim/link` with `dry_run`):
    /// five parts, or six with WhatsApp's help link last; a ref some page shows now; that page's
    /// key material, including its *current* ADV secret. Returns the page's connection.
    pub fn check_qr(&self, qr: &str) -> Result<ConnId, PhoneError> {
        let parts: Vec<&str> = qr.trim().split(',').collect();
        let shape_ok = match parts.len() {
            5 => true,
            6 => parts[5] == QR_SIXTH_PART,
            _ => false,
        };
        if !shape_ok || parts.iter().any(|p| p.is_empty()) {
            return Err(PhoneError::Invalid(
                "invalid_qr",
                format!(
                    "a QR string has five non-empty comma-separated parts, or six with {QR_SIXTH_PART} last"
                ),
            ));
        }
        let found = self
            .conns
            .iter()
            .find(|(_, c)| c.phase == Phase::Unpaired && c.reference.as_deref() == Some(parts[0]));
        let Some((&conn, c)) = found else {
            let expired = self.conns.values().any(|c| {
                c.old_refs.iter().any(|r| r == parts[0])
                    || (c.phase == Phase::Idle && c.reference.as_deref() == Some(parts[0]))
            });
            return Err(if expired {
                PhoneError::Conflict("qr_expired", "this QR ref has expired".into())
            } else {
                PhoneError::NotFound("unknown_qr", "no page shows this QR ref".into())
            });
        };
        let Some(k) = c.keys.as_ref() else {
            return Err(PhoneError::Invalid(
                "invalid_qr",
                "the page showing this ref sent no key material".into(),
            ));
        };
        if !(k.noise == parts[1] && k.identity == parts[2] && k.platform == parts[4]) {
            return Err(PhoneError::Invalid(
                "invalid_qr",
                "the key material does not match the page showing this ref".into(),
            ));
        }
        if k.adv != parts[3] {
            return Err(if c.old_advs.iter().any(|a| a == parts[3]) {
                PhoneError::Conflict(
                    "stale_adv_secret",
                    "the QR carries an ADV secret that was rotated since: build the QR again \
                     from the current getADVSecretKey()"
                        .into(),
                )
            } else {
                PhoneError::Invalid(
                    "invalid_qr",
                    "the ADV secret does not match the page showing this ref".into(),
                )
            });
        }
        Ok(conn)
    }

    /// `/sim/pair`: the phone typed a pairing code.
    pub fn pair(
        &mut self,
        phone: &str,
        code: &str,
        name: Option<&str>,
        now: u64,
    ) -> Result<LinkOutcome, PhoneError> {
        check_phone(phone)?;
        let code: String = code
            .chars()
            .filter(|c| *c != '-')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        if code.len() != 8 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(PhoneError::Invalid(
                "invalid_code",
                "a pairing code is 8 letters or digits, optionally as XXXX-XXXX".into(),
            ));
        }
        let found = self.conns.iter().find(|(_, c)| {
            matches!(c.phase, Phase::Unpaired | Phase::Idle)
                && c.pairing
                    .as_ref()
                    .is_some_and(|(p, k)| p == phone && *k == code)
        });
        let Some((&conn, _)) = found else {
            return Err(PhoneError::NotFound(
                "unknown_code",
                "no page shows this pairing code for this phone".into(),
            ));
        };
        Ok(self.link_or_passkey(conn, phone, name, now))
    }

    /// Links at once, or — with the `passkey: linking` fault — starts WhatsApp's passkey
    /// linking on the page and waits for `POST /sim/passkey`.
    fn link_or_passkey(
        &mut self,
        conn: ConnId,
        phone: &str,
        name: Option<&str>,
        now: u64,
    ) -> LinkOutcome {
        if self.passkey_fault != Some(PasskeyFault::Linking) {
            return LinkOutcome::Linked(self.link(conn, phone, name, now));
        }
        let code: String = (0..6)
            .map(|_| char::from(b'0' + self.rng.random_range(0..10u8)))
            .collect();
        if let Some(c) = self.conns.get_mut(&conn) {
            c.phase = Phase::Passkey;
            c.next_rotation_at = u64::MAX;
            c.passkey = Some((phone.to_owned(), name.map(str::to_owned)));
        }
        for (stage, code) in [("prologue", None), ("code", Some(code))] {
            self.effects.push(Effect::Send(
                conn,
                ServerMsg::Passkey {
                    stage: stage.into(),
                    code,
                },
            ));
        }
        LinkOutcome::Passkey {
            passkey: "pending",
            phone: phone.to_owned(),
        }
    }

    /// `POST /sim/passkey`: the phone finishes (`complete`) or cancels passkey linking of its
    /// pending page, or passes the integrity checkpoint of its linked devices.
    pub fn passkey(
        &mut self,
        phone: &str,
        action: &str,
        now: u64,
    ) -> Result<serde_json::Value, PhoneError> {
        check_phone(phone)?;
        if action != "complete" && action != "cancel" {
            return Err(PhoneError::Invalid(
                "invalid_action",
                "action is \"complete\" or \"cancel\"".into(),
            ));
        }
        let pending = self.conns.iter().find_map(|(id, c)| {
            (c.phase == Phase::Passkey && c.passkey.as_ref().is_some_and(|(p, _)| p == phone))
                .then_some(*id)
        });
        if let Some(conn) = pending {
            let (_, name) = self
                .conns
                .get_mut(&conn)
                .and_then(|c| c.passkey.take())
                .unwrap_or_default();
            if action == "complete" {
                let l = self.link(conn, phone, name.as_deref(), now);
                return Ok(serde_json::json!({ "linked": l }));
            }
            self.effects.push(Effect::Send(
                conn,
                ServerMsg::Passkey {
                    stage: "cancelled".into(),
                    code: None,
                },
            ));
            self.start_qr(conn, now);
            return Ok(serde_json::json!({ "cancelled": true }));
        }
        let devices: Vec<String> = self
            .devices
            .values()
            .filter(|d| d.phone == phone && self.checkpoints.contains(&d.device))
            .map(|d| d.device.clone())
            .collect();
        if devices.is_empty() || action != "complete" {
            return Err(PhoneError::NotFound(
                "no_passkey",
                "this phone has no pending passkey linking (and, for complete, no checkpoint)"
                    .into(),
            ));
        }
        for d in &devices {
            self.checkpoints.remove(d);
            for c in self.online_conns_of_device(d) {
                self.effects
                    .push(Effect::Send(c, ServerMsg::CheckpointDone));
            }
        }
        Ok(serde_json::json!({ "checkpoints_passed": devices.len() }))
    }

    /// The `passkey` fault (None clears it).
    pub fn set_passkey_fault(&mut self, f: Option<PasskeyFault>) {
        self.passkey_fault = f;
    }

    /// The `passkey` fault, if set.
    pub fn passkey_fault(&self) -> Option<PasskeyFault> {
        self.passkey_fault
    }

    /// The `upload_fail` fault.
    pub fn set_upload_fail(&mut self, on: bool) {
        self.upload_fail = on;
    }

    /// Whether the `upload_fail` fault is set.
    pub fn upload_fail(&self) -> bool {
        self.upload_fail
    }

    /// `POST /mms/<type>/<token>`: keeps an encrypted upload; returns its direct path.
    pub fn upload(
        &mut self,
        media_type: &str,
        token: &str,
        body: Vec<u8>,
    ) -> Result<String, PhoneError> {
        if self.upload_fail {
            return Err(PhoneError::Conflict(
                "upload_failed",
                "the upload_fail fault is set".into(),
            ));
        }
        let nonce = self.rng.random::<u64>();
        self.media
            .put(media_type, token, body, nonce)
            .map_err(|e| PhoneError::Invalid("invalid_upload", e.to_string()))
    }

    /// `GET /sim/lid?phone=`: the LID user of a phone, `<15 digits>@lid`. The account is known
    /// from then on, so sends to that LID are accepted.
    pub fn lid(&mut self, phone: &str) -> Result<String, PhoneError> {
        check_phone(phone)?;
        Ok(format!("{}@lid", self.lids.learn(phone)))
    }

    /// `POST /sim/groups`: creates a group; every linked member's pages get its chat.
    pub fn create_group(&mut self, g: &NewGroup, now: u64) -> Result<String, PhoneError> {
        let subject = g.subject.trim();
        if subject.is_empty() || subject.len() > addressing::MAX_SUBJECT_BYTES {
            return Err(PhoneError::Invalid(
                "invalid_subject",
                format!("subject is 1 to {} bytes", addressing::MAX_SUBJECT_BYTES),
            ));
        }
        if g.participants.is_empty()
            || g.participants.len() > addressing::MAX_GROUP_PARTICIPANTS
            || !g.participants.iter().all(|p| valid_phone(p))
        {
            return Err(PhoneError::Invalid(
                "invalid_participants",
                format!(
                    "participants are 1 to {} phones of 5 to 20 digits",
                    addressing::MAX_GROUP_PARTICIPANTS
                ),
            ));
        }
        if let Some(p) = &g.phone {
            check_phone(p)?;
            if !self.devices.values().any(|d| &d.phone == p) {
                return Err(PhoneError::NotFound(
                    "unknown_phone",
                    "no device is linked to this phone".into(),
                ));
            }
        }
        let mut members: Vec<String> = g.phone.iter().cloned().collect();
        for p in &g.participants {
            if !members.contains(p) {
                members.push(p.clone());
            }
        }
        let Some(creator) = members
            .iter()
            .find(|p| self.devices.values().any(|d| &d.phone == *p))
            .cloned()
        else {
            return Err(PhoneError::NotFound(
                "unknown_phone",
                "no participant has a linked device".into(),
            ));
        };
        if self.groups.len() >= addressing::MAX_GROUPS {
            return Err(PhoneError::Conflict(
                "too_many_groups",
                format!("{} groups exist already", addressing::MAX_GROUPS),
            ));
        }
        let id = format!(
            "{creator}-{}@g.us",
            self.rng.random_range(1_000_000_000u64..10_000_000_000)
        );
        for p in &members {
            self.lids.learn(p);
        }
        let group = Group {
            id: id.clone(),
            subject: subject.to_owned(),
            participants: members.clone(),
            lid_addressing: g.lid_addressing,
            creation: now / 1000,
            owner: Some(creator.clone()),
            admins: vec![creator.clone()],
            description: String::new(),
            invite: None,
        };
        let view = group.view();
        self.groups.insert(id.clone(), group);
        for p in &members {
            for c in self.online_conns_of_phone(p) {
                self.effects.push(Effect::Send(
                    c,
                    ServerMsg::Group {
                        group: view.clone(),
                    },
                ));
            }
        }
        Ok(id)
    }

    pub(super) fn link(
        &mut self,
        conn: ConnId,
        phone: &str,
        name: Option<&str>,
        now: u64,
    ) -> Linked {
        let device = hex::encode(self.rng.random::<[u8; 8]>());
        let token = hex::encode(self.rng.random::<[u8; 32]>());
        let noise = self
            .conns
            .get(&conn)
            .and_then(|c| c.keys.as_ref())
            .map(|k| k.noise.clone())
            .unwrap_or_default();
        let pushname = name
            .map(str::to_owned)
            .unwrap_or_else(|| format!("Sim {phone}"));
        let d = Device {
            device: device.clone(),
            phone: phone.to_owned(),
            token_sha256: sha256_hex(token.as_bytes()),
            pushname: pushname.clone(),
            noise,
            linked_at: now,
        };
        self.devices.insert(device.clone(), d.clone());
        self.dirty = true;
        if let Some(c) = self.conns.get_mut(&conn) {
            if let Some(old) = c.reference.take() {
                push_old_ref(&mut c.old_refs, old);
            }
            c.phase = Phase::Connected;
            c.device = Some(device.clone());
            c.pairing = None;
            c.passkey = None;
            c.next_rotation_at = u64::MAX;
        }
        let (lid, groups, checkpoint) = self.welcome(&d);
        self.effects.push(Effect::Send(
            conn,
            ServerMsg::Paired {
                device: device.clone(),
                token,
                wid: wid_of(phone),
                pushname,
                platform: PHONE_PLATFORM.into(),
                sync_ms: self.sync_ms(),
                lid: lid.clone(),
                groups,
                checkpoint,
            },
        ));
        self.after_connect(conn, &d);
        Linked {
            device,
            phone: phone.to_owned(),
            wid: wid_of(phone),
            lid,
        }
    }
}
