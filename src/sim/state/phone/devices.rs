//! The phone's devices and what it does to them through the control API: unlink, a dropped socket,
//! a crash of the page, the web versions the servers serve and deprecate, and the devices view.

use super::*;

impl Sim {
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

    pub(crate) fn deprecate(&mut self, conn: ConnId) {
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
