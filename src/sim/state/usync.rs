//! The contact query of the simulated servers (WhatsApp's USync "is this number on WhatsApp?"),
//! the accounts it answers from, and the log of every query a page made.
//!
//! An account is a phone the servers know: every linked phone, every inbound sender and group
//! member, every number looked up with `GET /sim/lid`, and every number registered with
//! `POST /sim/accounts` (the LID book of `addressing`). A query for anything else answers "not on
//! WhatsApp" (`null`, as `WAWebQueryExistsJob` resolves). The log lets a test prove that a
//! caller cached an answer: a second lookup that never reached the page leaves no second entry.

use std::collections::VecDeque;

use serde::Serialize;

use super::{ConnId, Effect, Mapping, Phase, PhoneError, ServerMsg, Sim, check_phone, valid_phone};

/// Queries remembered per linked phone for `/sim/queries`; the oldest go first.
pub const MAX_QUERIES_PER_PHONE: usize = 10_000;

/// One exists query a page made, as `GET /sim/queries?phone=` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueryView {
    /// `phone` (`queryPhoneExists`, or `queryWidExists` with a PN wid) or `lid`.
    pub kind: String,
    /// What was asked: the digits of the phone, or the `<lid>@lid`.
    pub query: String,
    /// Whether an account answered.
    pub found: bool,
    /// The status the query failed with (the `usync_error` fault).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<u16>,
    /// When, ms since the epoch.
    pub timestamp: u64,
}

impl Sim {
    /// A page's exists query (`WAWebQueryExistsJob.queryExist`): exactly one of `phone` (the
    /// number, `+` and separators allowed) and `lid` (`<digits>@lid`). Answers the account's
    /// PN↔LID pair, or `null` for no account; only a linked, connected page may ask.
    pub(super) fn query_exists(
        &mut self,
        conn: ConnId,
        req: u64,
        phone: Option<String>,
        lid: Option<String>,
        now: u64,
    ) {
        let device = self
            .conns
            .get(&conn)
            .filter(|c| c.phase == Phase::Connected)
            .and_then(|c| c.device.clone())
            .and_then(|d| self.devices.get(&d).cloned());
        let Some(device) = device else {
            // USync answers an unauthenticated socket with an error, as a status code.
            self.effects.push(Effect::Send(
                conn,
                ServerMsg::ExistsError {
                    req,
                    code: 401,
                    text: "not connected".into(),
                },
            ));
            return;
        };
        let (kind, query, account) = match (phone, lid) {
            (Some(p), None) => {
                let digits: String = p.chars().filter(char::is_ascii_digit).collect();
                let found = valid_phone(&digits) && self.is_account(&digits);
                let account = found.then(|| digits.clone());
                ("phone", digits, account)
            }
            (None, Some(l)) => {
                let user = l.strip_suffix("@lid").unwrap_or_default();
                let account = (!user.is_empty() && user.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| self.lids.phone_of(user).map(str::to_owned))
                    .flatten();
                let mut query = l;
                query.truncate(64);
                ("lid", query, account)
            }
            _ => {
                self.effects.push(Effect::Send(
                    conn,
                    ServerMsg::ExistsError {
                        req,
                        code: 400,
                        text: "give exactly one of phone and lid".into(),
                    },
                ));
                return;
            }
        };
        let error = self.usync_error;
        let log = self.queries.entry(device.phone.clone()).or_default();
        log.push_back(QueryView {
            kind: kind.into(),
            query,
            found: account.is_some() && error.is_none(),
            error,
            timestamp: now,
        });
        while log.len() > MAX_QUERIES_PER_PHONE {
            log.pop_front();
        }
        if let Some(code) = error {
            self.effects.push(Effect::Send(
                conn,
                ServerMsg::ExistsError {
                    req,
                    code,
                    text: "simulated USync error".into(),
                },
            ));
            return;
        }
        let result = account.map(|pn| Mapping {
            lid: format!("{}@lid", super::lid_of(&pn)),
            pn: format!("{pn}@c.us"),
        });
        self.effects
            .push(Effect::Send(conn, ServerMsg::Exists { req, result }));
    }

    /// The `usync_error` fault: every exists query fails with `code` (`None`: off).
    pub fn set_usync_error(&mut self, code: Option<u16>) {
        self.usync_error = code;
    }

    /// The `usync_error` fault, if set.
    pub fn usync_error(&self) -> Option<u16> {
        self.usync_error
    }

    /// Whether the servers know an account for these digits.
    fn is_account(&self, phone: &str) -> bool {
        self.lids.phone_of(&super::lid_of(phone)) == Some(phone)
    }

    /// `POST /sim/accounts`: registers a WhatsApp account for `phone` (idempotent), so that
    /// exists queries find it and sends to its LID are accepted. Answers its LID.
    pub fn add_account(&mut self, phone: &str) -> Result<String, PhoneError> {
        check_phone(phone)?;
        Ok(format!("{}@lid", self.lids.learn(phone)))
    }

    /// `GET /sim/queries?phone=`: the exists queries the pages of a linked phone made, oldest
    /// first.
    pub fn queries(&self, phone: &str) -> Result<Vec<QueryView>, PhoneError> {
        check_phone(phone)?;
        Ok(self
            .queries
            .get(phone)
            .map(|l| l.iter().cloned().collect::<Vec<_>>())
            .unwrap_or_default())
    }
}

/// The per-phone query logs (a field of [`Sim`]).
pub(super) type QueryLogs = std::collections::BTreeMap<String, VecDeque<QueryView>>;
