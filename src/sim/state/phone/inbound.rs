//! What the phone's contacts send to a linked account (/sim/inbound: 1:1 by phone number or LID, or
//! in a group, optionally first as ciphertext), delivery to the account's devices, revokes, and the
//! record of what the account sent.

use super::*;

impl Sim {
    /// `/sim/inbound`: a contact writes to a linked phone (1:1 by PN or LID, or in a group,
    /// optionally as `ciphertext` first), or with `from_me` the phone itself writes in that
    /// chat and its linked devices get the message as their own. Returns the serialized id.
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
                if m.from_me && m.author.is_some() {
                    return bad("invalid_body", "a message from the phone has no author");
                }
                let author = if m.from_me {
                    Some(to)
                } else {
                    m.author.as_deref()
                };
                let Some(author) = author.filter(|a| valid_phone(a)) else {
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
            .map(|md| super::super::media::media_type_of(md.mimetype.trim()));
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
            Some(a) => format!("{}_{chat}_{key}_{a}", m.from_me),
            None => format!("{}_{chat}_{key}", m.from_me),
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
            from_me: m.from_me,
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
    pub(crate) fn deliver(&mut self, phone: &str, msg: ServerMsg) -> Result<(), PhoneError> {
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
}
