//! The phone side of the simulated servers (the control API): linking, inbound messages,
//! unlink, faults, web versions and the devices view.

use super::content;
use super::*;

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

    /// `/sim/inbound`: a contact writes to a linked phone (1:1 by PN or LID, or in a group,
    /// optionally as `ciphertext` first). Returns the serialized id.
    pub fn inbound(&mut self, m: &Inbound, now: u64) -> Result<String, PhoneError> {
        let to = m.to.as_str();
        check_phone(to)?;
        let bad = |code: &'static str, msg: &str| Err(PhoneError::Invalid(code, msg.to_owned()));
        if m.text.len() > MAX_TEXT_BYTES {
            return bad(
                "text_too_long",
                &format!("text is limited to {MAX_TEXT_BYTES} bytes"),
            );
        }
        if let Some(ct) = &m.ciphertext
            && (ct.after_ms > MAX_CIPHERTEXT_MS || (ct.path != "change" && ct.path != "readd"))
        {
            return bad(
                "invalid_ciphertext",
                &format!(
                    "ciphertext is {{\"after_ms\": 0..={MAX_CIPHERTEXT_MS}, \"path\": \"change\"|\"readd\"}}"
                ),
            );
        }
        if !self.devices.values().any(|d| d.phone == to) {
            return Err(PhoneError::NotFound(
                "unknown_phone",
                "no device is linked to this phone".into(),
            ));
        }
        let (sender, chat, me, author) = match &m.group {
            Some(gid) => {
                if m.lid {
                    return bad(
                        "invalid_body",
                        "lid goes with 1:1 messages; a group has its own addressing mode",
                    );
                }
                let Some(author) = m.author.as_deref().filter(|a| valid_phone(a)) else {
                    return bad(
                        "invalid_phone",
                        "a group message needs author: 5 to 20 digits",
                    );
                };
                if m.from.as_deref().is_some_and(|f| f != author) {
                    return bad("invalid_body", "from and author differ");
                }
                if !addressing::valid_group_wid(gid) {
                    return bad("invalid_group", "group is <digits>-<digits>@g.us");
                }
                let g = self
                    .groups
                    .get(gid)
                    .ok_or_else(|| PhoneError::NotFound("unknown_group", "no such group".into()))?;
                if !g.participants.iter().any(|p| p == to)
                    || !g.participants.iter().any(|p| p == author)
                {
                    return Err(PhoneError::NotFound(
                        "not_a_participant",
                        "to and author must both be participants of the group".into(),
                    ));
                }
                (
                    author.to_owned(),
                    gid.clone(),
                    g.member_wid(to),
                    Some(g.member_wid(author)),
                )
            }
            None => {
                if m.author.is_some() {
                    return bad("invalid_body", "author goes with group");
                }
                let Some(from) = m.from.as_deref().filter(|f| valid_phone(f)) else {
                    return bad("invalid_phone", "from must be 5 to 20 digits");
                };
                if m.lid {
                    (
                        from.to_owned(),
                        format!("{}@lid", lid_of(from)),
                        format!("{}@lid", lid_of(to)),
                        None,
                    )
                } else {
                    (from.to_owned(), wid_of(from), wid_of(to), None)
                }
            }
        };
        let mimetype_type = m
            .media
            .as_ref()
            .map(|md| super::media::media_type_of(md.mimetype.trim()));
        let kind = content::inbound_type(
            m.kind.as_deref(),
            m.media.is_some(),
            mimetype_type,
            (m.location.is_some(), m.contact.is_some(), m.poll.is_some()),
        )?;
        let mut structured = match (&m.location, &m.contact, &m.poll) {
            (Some(l), _, _) => Some(content::location(l)?),
            (_, Some(c), _) => Some(content::contact(c)?),
            (_, _, Some(p)) => Some(content::poll(p)?),
            _ => None,
        };
        if let Some(q) = &m.quoted {
            let quoted = self.quoted(to, q, &chat, &me)?;
            let c = structured.get_or_insert_with(|| content::MsgContent {
                kind: "chat".into(),
                attrs: Default::default(),
            });
            content::add_quoted(&mut c.attrs, &chat, &quoted);
        }
        let media_type = m.media.is_some().then(|| content::mms_type(kind));
        let media = self.inbound_media(m, media_type, now)?;
        self.lids.learn(&sender);
        let key = self.new_msg_id();
        let serialized = match &author {
            Some(a) => format!("false_{chat}_{key}_{a}"),
            None => format!("false_{chat}_{key}"),
        };
        let msg = ServerMsg::Msg {
            id: key,
            chat,
            me,
            author,
            body: m.text.clone(),
            ts: now / 1000,
            mapping: m.lid_mapping.then(|| addressing::mapping_of(&sender)),
            ciphertext: m.ciphertext.clone(),
            media: media.map(Box::new),
            content: structured.map(Box::new),
        };
        self.deliver(to, msg)?;
        let log = self.inbound_log.entry(to.to_owned()).or_default();
        log.push_back((serialized.clone(), sender));
        while log.len() > MAX_INBOUND_LOG {
            log.pop_front();
        }
        Ok(serialized)
    }

    /// Sends to the phone's online pages, or queues for when one connects.
    pub(super) fn deliver(&mut self, phone: &str, msg: ServerMsg) -> Result<(), PhoneError> {
        let conns = self.online_conns_of_phone(phone);
        if conns.is_empty() {
            let q = self.inbox.entry(phone.to_owned()).or_default();
            if q.len() >= MAX_INBOX_PER_PHONE {
                return Err(PhoneError::Conflict(
                    "inbox_full",
                    format!("{MAX_INBOX_PER_PHONE} messages already wait for this offline phone"),
                ));
            }
            q.push_back(msg);
        } else {
            for conn in conns {
                self.effects.push(Effect::Send(conn, msg.clone()));
            }
        }
        Ok(())
    }

    /// `/sim/revoke`: the sender of an earlier inbound message deletes it for everyone.
    pub fn revoke(
        &mut self,
        from: &str,
        to: &str,
        wa_id: &str,
        now: u64,
    ) -> Result<(), PhoneError> {
        check_phone(to)?;
        check_phone(from)?;
        let known = self
            .inbound_log
            .get(to)
            .is_some_and(|l| l.iter().any(|(id, s)| id == wa_id && s == from));
        if !known {
            return Err(PhoneError::NotFound(
                "unknown_message",
                "no inbound message with this wa_id from this sender to this phone".into(),
            ));
        }
        self.deliver(
            to,
            ServerMsg::Revoke {
                id: wa_id.to_owned(),
                ts: now / 1000,
            },
        )
    }

    /// `/sim/messages`: what the devices of a phone sent, oldest first.
    pub fn messages(&self, phone: &str) -> Result<Vec<SentView>, PhoneError> {
        check_phone(phone)?;
        Ok(self
            .sent
            .get(phone)
            .map(|l| l.iter().map(|s| s.view.clone()).collect())
            .unwrap_or_default())
    }

    /// `/sim/unlink`: the phone logs its devices out. Returns how many.
    pub fn unlink(&mut self, phone: &str) -> Result<usize, PhoneError> {
        check_phone(phone)?;
        let ids: Vec<String> = self
            .devices
            .values()
            .filter(|d| d.phone == phone)
            .map(|d| d.device.clone())
            .collect();
        if ids.is_empty() {
            return Err(PhoneError::NotFound(
                "unknown_phone",
                "no device is linked to this phone".into(),
            ));
        }
        for id in &ids {
            self.unlink_device(id, "unlinked");
        }
        Ok(ids.len())
    }

    /// Fault: close the sockets of a phone's devices, refusing reconnects for `refuse_ms`.
    pub fn drop_socket(
        &mut self,
        phone: &str,
        refuse_ms: u64,
        now: u64,
    ) -> Result<usize, PhoneError> {
        check_phone(phone)?;
        let conns = self.online_conns_of_phone(phone);
        if conns.is_empty() {
            return Err(PhoneError::NotFound(
                "not_online",
                "no device of this phone is online".into(),
            ));
        }
        if refuse_ms > 0 {
            self.refusals
                .insert(phone.to_owned(), now.saturating_add(refuse_ms));
        }
        for &c in &conns {
            self.effects.push(Effect::Close(c));
        }
        Ok(conns.len())
    }

    /// Fault: tell a phone's pages to wreck their renderer.
    pub fn crash(&mut self, phone: &str, mode: &str) -> Result<usize, PhoneError> {
        check_phone(phone)?;
        if mode != "hang" && mode != "oom" {
            return Err(PhoneError::Invalid(
                "invalid_mode",
                "mode is \"hang\" or \"oom\"".into(),
            ));
        }
        let conns = self.online_conns_of_phone(phone);
        if conns.is_empty() {
            return Err(PhoneError::NotFound(
                "not_online",
                "no device of this phone is online".into(),
            ));
        }
        for &c in &conns {
            self.effects.push(Effect::Send(
                c,
                ServerMsg::Crash {
                    mode: mode.to_owned(),
                },
            ));
        }
        Ok(conns.len())
    }

    /// The web versions (`GET /sim/web-version`).
    pub fn web_versions(&self) -> &WebVersions {
        &self.web
    }

    /// `POST /sim/web-version`: a new live version and/or retirements. Pages running a version
    /// that is now retired are turned away at once (linked or not).
    pub fn set_web_versions(
        &mut self,
        live: Option<&str>,
        retire: &[String],
    ) -> Result<WebVersions, VersionError> {
        if self.web.apply(live, retire)? {
            self.dirty = true;
            let hit: Vec<ConnId> = self
                .conns
                .iter()
                .filter(|(_, c)| {
                    c.phase != Phase::Deprecated
                        && c.version.as_deref().is_some_and(|v| self.web.is_retired(v))
                })
                .map(|(id, _)| *id)
                .collect();
            for id in hit {
                self.deprecate(id);
            }
        }
        Ok(self.web.clone())
    }

    pub(super) fn deprecate(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.phase = Phase::Deprecated;
        c.next_rotation_at = u64::MAX;
        c.pairing = None;
        if let Some(old) = c.reference.take() {
            push_old_ref(&mut c.old_refs, old);
        }
        let version = c.version.clone().unwrap_or_default();
        self.effects
            .push(Effect::Send(conn, ServerMsg::Deprecated { version }));
        self.effects.push(Effect::Close(conn));
    }

    /// Removes every refusal.
    pub fn clear_refusals(&mut self) {
        self.refusals.clear();
    }

    /// `/sim/devices`: connections and linked devices.
    pub fn devices(&self) -> Vec<DeviceView> {
        let mut out = Vec::new();
        for (id, c) in &self.conns {
            let linked = c.device.as_ref().and_then(|d| self.devices.get(d));
            let state = match c.phase {
                Phase::New => "OPENING",
                Phase::Unpaired => "UNPAIRED",
                Phase::Idle => "UNPAIRED_IDLE",
                Phase::Connected => "CONNECTED",
                Phase::Conflict => "CONFLICT",
                Phase::Deprecated => "DEPRECATED_VERSION",
                Phase::Passkey => "PASSKEY",
            };
            let showing = matches!(c.phase, Phase::Unpaired | Phase::Idle);
            let qr = match (&c.reference, &c.keys) {
                (Some(r), Some(k)) if c.phase == Phase::Unpaired => Some(format!(
                    "{r},{},{},{},{}",
                    k.noise, k.identity, k.adv, k.platform
                )),
                _ => None,
            };
            out.push(DeviceView {
                device: linked.map_or_else(|| format!("conn-{id}"), |d| d.device.clone()),
                phone: linked.map(|d| d.phone.clone()),
                state: state.into(),
                online: true,
                reference: if showing { c.reference.clone() } else { None },
                qr,
                pairing_code: if showing {
                    c.pairing.as_ref().map(|(_, k)| k.clone())
                } else {
                    None
                },
                linked_at: linked.map(|d| d.linked_at),
                version: c.version.clone(),
            });
        }
        for d in self.devices.values() {
            if self.online_conns_of_device(&d.device).is_empty()
                && !self
                    .conns
                    .values()
                    .any(|c| c.device.as_deref() == Some(d.device.as_str()))
            {
                out.push(DeviceView {
                    device: d.device.clone(),
                    phone: Some(d.phone.clone()),
                    state: "OFFLINE".into(),
                    online: false,
                    reference: None,
                    qr: None,
                    pairing_code: None,
                    linked_at: Some(d.linked_at),
                    version: None,
                });
            }
        }
        out
    }
}
