//! The page side of the simulated servers: hello, QR batches and rotation, sends, acks,
//! logout and takeover.

use super::*;

impl Sim {
    pub(super) fn hello(
        &mut self,
        conn: ConnId,
        keys: DeviceKeys,
        creds: Option<Creds>,
        version: Option<String>,
        now: u64,
    ) {
        if let Err(message) = validate_keys(&keys) {
            self.protocol_error(conn, message);
            self.effects.push(Effect::Close(conn));
            return;
        }
        if version.as_deref().is_some_and(|v| !valid_version(v)) {
            self.protocol_error(conn, "version must look like 2.3000.1012345678-sim".into());
            self.effects.push(Effect::Close(conn));
            return;
        }
        let version = version.unwrap_or_else(|| self.web.live.clone());
        if let Some(c) = self.conns.get_mut(&conn) {
            c.keys = Some(keys);
            c.version = Some(version.clone());
        }
        if self.web.is_retired(&version) {
            // What WhatsApp's servers do with a too-old client: no QR, no login.
            self.deprecate(conn);
            return;
        }
        let Some(creds) = creds else {
            self.start_qr(conn, now);
            return;
        };
        let device = self.devices.get(&creds.device).cloned();
        match device {
            Some(d) if d.token_sha256 == sha256_hex(creds.token.as_bytes()) => {
                if self
                    .refusals
                    .get(&d.phone)
                    .is_some_and(|&until| now < until)
                {
                    self.effects.push(Effect::Close(conn));
                    return;
                }
                self.refusals.remove(&d.phone);
                // Another browser with the same credentials loses the session, as on WhatsApp.
                let others: Vec<ConnId> = self
                    .conns
                    .iter()
                    .filter(|(id, c)| {
                        **id != conn
                            && c.phase == Phase::Connected
                            && c.device.as_deref() == Some(d.device.as_str())
                    })
                    .map(|(id, _)| *id)
                    .collect();
                for o in others {
                    if let Some(c) = self.conns.get_mut(&o) {
                        c.phase = Phase::Conflict;
                    }
                    self.effects.push(Effect::Send(o, ServerMsg::Conflict));
                }
                self.activate(conn, &d);
            }
            _ => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.phase = Phase::New;
                }
                self.effects.push(Effect::Send(
                    conn,
                    ServerMsg::LoggedOut {
                        reason: "unknown_device".into(),
                    },
                ));
            }
        }
    }

    /// Makes `conn` the connected page of device `d` and brings it up to date.
    pub(super) fn activate(&mut self, conn: ConnId, d: &Device) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.phase = Phase::Connected;
            c.device = Some(d.device.clone());
            c.reference = None;
            c.pairing = None;
            c.next_rotation_at = u64::MAX;
        }
        let (lid, groups, checkpoint) = self.welcome(d);
        self.effects.push(Effect::Send(
            conn,
            ServerMsg::Connected {
                wid: wid_of(&d.phone),
                pushname: d.pushname.clone(),
                platform: PHONE_PLATFORM.into(),
                sync_ms: self.sync_ms(),
                lid,
                groups,
                checkpoint,
            },
        ));
        self.after_connect(conn, d);
    }

    /// What a connecting page of `d` learns besides its credentials: me's LID, the phone's
    /// groups, and the integrity challenge while the checkpoint is pending.
    pub(super) fn welcome(&mut self, d: &Device) -> (String, Vec<GroupView>, Option<String>) {
        let lid = format!("{}@lid", self.lids.learn(&d.phone));
        let groups = self
            .groups
            .values()
            .filter(|g| g.participants.contains(&d.phone))
            .map(Group::view)
            .collect();
        if self.passkey_fault == Some(PasskeyFault::Checkpoint) {
            self.checkpoints.insert(d.device.clone());
        }
        let checkpoint = self
            .checkpoints
            .contains(&d.device)
            .then(|| hex::encode(self.rng.random::<[u8; 16]>()));
        (lid, groups, checkpoint)
    }

    /// Pushes acks that moved while offline and the queued inbound messages.
    pub(super) fn after_connect(&mut self, conn: ConnId, d: &Device) {
        if let Some(list) = self.sent.get(&d.phone) {
            for s in list
                .iter()
                .filter(|s| s.device == d.device && s.view.refused.is_none())
            {
                self.effects.push(Effect::Send(
                    conn,
                    ServerMsg::Ack {
                        id: s.view.id.clone(),
                        ack: s.view.ack,
                    },
                ));
            }
        }
        if let Some(q) = self.inbox.remove(&d.phone) {
            for m in q {
                self.effects.push(Effect::Send(conn, m));
            }
        }
    }

    /// A new batch of refs, with a new ADV secret (what WhatsApp's `pair-device` does).
    pub(super) fn start_qr(&mut self, conn: ConnId, now: u64) {
        let reference = self.new_ref();
        let adv = base64::engine::general_purpose::STANDARD.encode(self.rng.random::<[u8; 32]>());
        let first = self.timing.qr_first_ms;
        if let Some(c) = self.conns.get_mut(&conn) {
            if let Some(old) = c.reference.replace(reference.clone()) {
                push_old_ref(&mut c.old_refs, old);
            }
            if let Some(k) = c.keys.as_mut() {
                let old = std::mem::replace(&mut k.adv, adv.clone());
                c.old_advs.push_back(old);
                while c.old_advs.len() > OLD_ADVS_KEPT {
                    c.old_advs.pop_front();
                }
            }
            c.phase = Phase::Unpaired;
            c.rotations = 0;
            c.next_rotation_at = now.saturating_add(first);
        }
        self.effects.push(Effect::Send(
            conn,
            ServerMsg::Qr {
                reference,
                adv: Some(adv),
                ttl_ms: first,
            },
        ));
    }

    /// Fault: every page waiting to be linked gets a new batch of refs and a new ADV secret.
    /// Returns how many.
    pub fn rotate_adv_secrets(&mut self, now: u64) -> usize {
        let ids: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.phase, Phase::Unpaired | Phase::Idle))
            .map(|(id, _)| *id)
            .collect();
        for &id in &ids {
            self.start_qr(id, now);
        }
        ids.len()
    }

    /// The `sync_delay_ms` fault (None: back to the configured delay).
    pub fn set_sync_delay_override(&mut self, ms: Option<u64>) {
        self.sync_override = ms;
    }

    /// The `sync_delay_ms` fault, if set.
    pub fn sync_delay_override(&self) -> Option<u64> {
        self.sync_override
    }

    pub(super) fn sync_ms(&self) -> u64 {
        self.sync_override.unwrap_or(self.timing.sync_ms)
    }

    pub(super) fn refresh_qr(&mut self, conn: ConnId, now: u64) {
        let phase = self.conns.get(&conn).map(|c| c.phase);
        if matches!(phase, Some(Phase::Unpaired | Phase::Idle)) {
            self.start_qr(conn, now);
        }
    }

    pub(super) fn pair_code_request(&mut self, conn: ConnId, req: u64, phone: String) {
        let phase = self.conns.get(&conn).map(|c| c.phase);
        if !matches!(phase, Some(Phase::Unpaired | Phase::Idle)) {
            self.effects.push(Effect::Send(
                conn,
                ServerMsg::PairCodeError {
                    req,
                    message: "the device is not waiting to be linked".into(),
                },
            ));
            return;
        }
        if !valid_phone(&phone) {
            self.effects.push(Effect::Send(
                conn,
                ServerMsg::PairCodeError {
                    req,
                    message: "phone must be 5 to 20 digits".into(),
                },
            ));
            return;
        }
        let code: String = (0..8)
            .map(|_| CODE_ALPHABET[self.rng.random_range(0..CODE_ALPHABET.len())] as char)
            .collect();
        if let Some(c) = self.conns.get_mut(&conn) {
            c.pairing = Some((phone, code.clone()));
        }
        self.effects
            .push(Effect::Send(conn, ServerMsg::PairCode { req, code }));
    }

    pub(super) fn send(&mut self, conn: ConnId, msg: OutMsg, now: u64) {
        let device = match self.conns.get(&conn) {
            Some(c) if c.phase == Phase::Connected => c.device.clone(),
            _ => None,
        };
        let Some(device) = device.and_then(|d| self.devices.get(&d).cloned()) else {
            self.effects.push(Effect::Send(
                conn,
                ServerMsg::SendError {
                    id: msg.id,
                    message: "not connected".into(),
                },
            ));
            return;
        };
        let view = match self.check_send(&device.phone, &msg, now) {
            Ok(v) => v,
            Err(message) => {
                self.record_refused(&device, &msg, &message, now);
                self.effects.push(Effect::Send(
                    conn,
                    ServerMsg::SendError {
                        id: msg.id,
                        message,
                    },
                ));
                return;
            }
        };
        let list = self.sent.entry(device.phone.clone()).or_default();
        // A page resends what it has not seen acked after a reconnect: keep the first copy.
        let ack = match list.iter().find(|s| s.view.id == view.id) {
            Some(existing) => existing.view.ack,
            None => {
                list.push_back(Sent {
                    view: view.clone(),
                    device: device.device.clone(),
                    next_ack_at: now.saturating_add(self.timing.ack_device_ms),
                });
                if list.len() > MAX_SENT_PER_PHONE {
                    list.pop_front();
                }
                1
            }
        };
        self.effects
            .push(Effect::Send(conn, ServerMsg::Ack { id: view.id, ack }));
    }

    /// `Socket.logout(reason)`: the reason (WhatsApp's logout reason code) comes back to the
    /// page for its `?logout_reason=`.
    pub(super) fn logout(&mut self, conn: ConnId, reason: Option<String>) {
        let reason = reason
            .filter(|r| {
                (1..=40).contains(&r.len())
                    && r.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            })
            .unwrap_or_else(|| "user_initiated".into());
        let device = self
            .conns
            .get(&conn)
            .filter(|c| c.phase == Phase::Connected)
            .and_then(|c| c.device.clone());
        match device {
            Some(d) => self.unlink_device(&d, &reason),
            None => self
                .effects
                .push(Effect::Send(conn, ServerMsg::LoggedOut { reason })),
        }
    }

    /// A refused send stays visible in `/sim/messages` (ack 0 forever, `refused` says why).
    fn record_refused(&mut self, device: &Device, msg: &OutMsg, why: &str, now: u64) {
        let mut id = msg.id.clone();
        id.truncate(200);
        let mut to = msg.to.clone();
        to.truncate(100);
        let list = self.sent.entry(device.phone.clone()).or_default();
        if list.iter().any(|s| s.view.id == id) {
            return;
        }
        list.push_back(Sent {
            view: SentView {
                id,
                to,
                kind: if msg.kind.is_empty() {
                    "chat".into()
                } else {
                    msg.kind.chars().take(20).collect()
                },
                text: if msg.kind.is_empty() || msg.kind == "chat" {
                    msg.body.clone()
                } else {
                    msg.caption.clone()
                }
                .filter(|t| t.len() <= MAX_TEXT_BYTES),
                media: None,
                uploaded: None,
                sha256: None,
                participant: None,
                addressing: if msg.to.ends_with("@lid") {
                    "lid"
                } else {
                    "pn"
                }
                .into(),
                ack: 0,
                refused: Some(why.to_owned()),
                timestamp: now,
                extra: Default::default(),
            },
            device: device.device.clone(),
            next_ack_at: u64::MAX,
        });
        if list.len() > MAX_SENT_PER_PHONE {
            list.pop_front();
        }
    }

    pub(super) fn takeover(&mut self, conn: ConnId) {
        let device = self
            .conns
            .get(&conn)
            .filter(|c| c.phase == Phase::Conflict)
            .and_then(|c| c.device.clone())
            .and_then(|d| self.devices.get(&d).cloned());
        let Some(d) = device else { return };
        let others: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(id, c)| {
                **id != conn
                    && c.phase == Phase::Connected
                    && c.device.as_deref() == Some(d.device.as_str())
            })
            .map(|(id, _)| *id)
            .collect();
        for o in others {
            if let Some(c) = self.conns.get_mut(&o) {
                c.phase = Phase::Conflict;
            }
            self.effects.push(Effect::Send(o, ServerMsg::Conflict));
        }
        self.activate(conn, &d);
    }

    pub(super) fn unlink_device(&mut self, device: &str, reason: &str) {
        self.devices.remove(device);
        self.checkpoints.remove(device);
        self.dirty = true;
        let conns: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.device.as_deref() == Some(device))
            .map(|(id, _)| *id)
            .collect();
        for id in conns {
            if let Some(c) = self.conns.get_mut(&id) {
                c.phase = Phase::New;
                c.device = None;
            }
            self.effects.push(Effect::Send(
                id,
                ServerMsg::LoggedOut {
                    reason: reason.into(),
                },
            ));
        }
    }

    // --- timers ---

    /// Advances QR rotations and acks that are due at `now`.
    pub fn tick(&mut self, now: u64) {
        let due: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.phase == Phase::Unpaired && now >= c.next_rotation_at)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let rotations = self.conns.get(&id).map_or(0, |c| c.rotations);
            if rotations >= self.timing.qr_max_rotations {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.phase = Phase::Idle;
                    c.next_rotation_at = u64::MAX;
                    if let Some(old) = c.reference.take() {
                        push_old_ref(&mut c.old_refs, old.clone());
                        // The page keeps showing the dead ref, as WhatsApp Web does.
                        c.reference = Some(old);
                    }
                }
                self.effects.push(Effect::Send(id, ServerMsg::Idle));
            } else {
                let reference = self.new_ref();
                let next = self.timing.qr_next_ms;
                if let Some(c) = self.conns.get_mut(&id) {
                    if let Some(old) = c.reference.replace(reference.clone()) {
                        push_old_ref(&mut c.old_refs, old);
                    }
                    c.rotations += 1;
                    c.next_rotation_at = now.saturating_add(next);
                }
                self.effects.push(Effect::Send(
                    id,
                    ServerMsg::Qr {
                        reference,
                        adv: None,
                        ttl_ms: next,
                    },
                ));
            }
        }

        let mut acks: Vec<(String, String, u8)> = Vec::new();
        for list in self.sent.values_mut() {
            // Every message waits the same delays, so the unfinished ones are always the newest:
            // walk back from the end and stop at the first one already read.
            for s in list.iter_mut().rev() {
                if s.view.refused.is_some() {
                    continue;
                }
                if s.view.ack >= 3 {
                    break;
                }
                if now >= s.next_ack_at {
                    s.view.ack += 1;
                    s.next_ack_at = now.saturating_add(self.timing.ack_read_ms);
                    acks.push((s.device.clone(), s.view.id.clone(), s.view.ack));
                }
            }
        }
        for (device, id, ack) in acks {
            for conn in self.online_conns_of_device(&device) {
                self.effects.push(Effect::Send(
                    conn,
                    ServerMsg::Ack {
                        id: id.clone(),
                        ack,
                    },
                ));
            }
        }
    }
}
