//! Sessions: create (with node and check binding), renew, destroy, reads, and invalidation with
//! its lock release or key deletion (behavior) and lock delay.
//!
//! Apart from `state.rs` because session rules are Consul's `session_endpoint` on their own.

use super::*;

impl State {
    // --- sessions ---

    pub(super) fn new_uuid(&mut self) -> String {
        let b: [u8; 16] = self.rng.random();
        let h = hex::encode(b);
        format!(
            "{}-{}-4{}-{}{}-{}",
            &h[0..8],
            &h[8..12],
            &h[13..16],
            ['8', '9', 'a', 'b'][usize::from(b[8] & 3)],
            &h[17..20],
            &h[20..32]
        )
    }

    /// `PUT /v1/session/create`: returns the new session's ID.
    pub fn session_create(
        &mut self,
        req: SessionCreate,
        now: Instant,
    ) -> Result<String, StateError> {
        let node = req.node.clone().unwrap_or_else(|| self.cfg.node.clone());
        if !self.nodes.contains_key(&node) {
            return Err(StateError::Internal(format!(
                "Failed to create session: Missing node registration: {node:?}"
            )));
        }
        let behavior = match req.behavior.as_str() {
            "" | "release" => Behavior::Release,
            "delete" => Behavior::Delete,
            other => {
                return Err(StateError::Internal(format!(
                    "Invalid Behavior setting '{other}'"
                )));
            }
        };
        let ttl_duration = if req.ttl.is_empty() {
            None
        } else {
            let ttl = super::super::duration::parse_go_duration(&req.ttl).ok_or_else(|| {
                StateError::Internal(format!(
                    "Session TTL '{}' invalid: time: invalid duration {:?}",
                    req.ttl, req.ttl
                ))
            })?;
            if !ttl.is_zero() && (ttl < self.cfg.session_ttl_min || ttl > self.cfg.session_ttl_max)
            {
                return Err(StateError::Internal(format!(
                    "Invalid Session TTL '{}', must be between [{}={}]",
                    ttl.as_nanos(),
                    super::super::duration::format_go_duration(self.cfg.session_ttl_min),
                    super::super::duration::format_go_duration(self.cfg.session_ttl_max)
                )));
            }
            (!ttl.is_zero()).then_some(ttl)
        };
        let lock_delay = req.lock_delay.unwrap_or(self.cfg.default_lock_delay);
        if lock_delay > self.cfg.max_lock_delay {
            return Err(StateError::Internal(format!(
                "Invalid Lock Delay '{}', must be less than {}",
                super::super::duration::format_go_duration(lock_delay),
                super::super::duration::format_go_duration(self.cfg.max_lock_delay)
            )));
        }
        let node_checks = req
            .node_checks
            .clone()
            .unwrap_or_else(|| vec![SERF_CHECK_ID.to_string()]);
        for check in node_checks.iter().chain(req.service_checks.iter()) {
            let status = if check == SERF_CHECK_ID {
                Some(if self.serf_critical.contains(&node) {
                    Status::Critical
                } else {
                    Status::Passing
                })
            } else {
                self.checks.get(check).map(|c| c.status)
            };
            match status {
                None => {
                    return Err(StateError::Internal(format!(
                        "Missing check '{check}' registration"
                    )));
                }
                Some(Status::Critical) => {
                    return Err(StateError::Internal(format!(
                        "Check '{check}' is in critical state"
                    )));
                }
                Some(_) => {}
            }
        }
        let id = self.new_uuid();
        let idx = self.next_index();
        let expires_at = ttl_duration.map(|t| now + t * self.cfg.session_ttl_multiplier);
        self.sessions.insert(
            id.clone(),
            SessionEntry {
                id: id.clone(),
                name: req.name,
                node,
                lock_delay,
                behavior,
                ttl: if ttl_duration.is_some() {
                    req.ttl
                } else {
                    String::new()
                },
                ttl_duration,
                node_checks,
                service_checks: req.service_checks,
                create_index: idx,
                modify_index: idx,
                expires_at,
            },
        );
        self.sessions_table_index = idx;
        self.commit(idx);
        Ok(id)
    }

    /// `PUT /v1/session/renew/<id>`: resets the TTL timer.
    pub fn session_renew(&mut self, id: &str, now: Instant) -> Result<SessionEntry, StateError> {
        let mult = self.cfg.session_ttl_multiplier;
        match self.sessions.get_mut(id) {
            Some(s) => {
                s.expires_at = s.ttl_duration.map(|t| now + t * mult);
                Ok(s.clone())
            }
            None => Err(StateError::NotFound(format!("Session id '{id}' not found"))),
        }
    }

    /// `PUT /v1/session/destroy/<id>`: always `true` (idempotent).
    pub fn session_destroy(&mut self, id: &str, now: Instant) -> bool {
        let idx = self.next_index();
        self.invalidate_session_at(idx, id, now);
        true
    }

    /// One session (empty when unknown) and the sessions table index.
    pub fn session_info(&self, id: &str) -> (Vec<&SessionEntry>, u64) {
        (
            self.sessions.get(id).into_iter().collect(),
            self.sessions_table_index.max(1),
        )
    }

    /// Every session and the sessions table index.
    pub fn session_list(&self) -> (Vec<&SessionEntry>, u64) {
        (
            self.sessions.values().collect(),
            self.sessions_table_index.max(1),
        )
    }

    /// Whether a session exists.
    pub fn has_session(&self, id: &str) -> bool {
        self.sessions.contains_key(id)
    }

    /// Removes a session: its locks are released (or its keys deleted) and the lock delay
    /// starts on every key it held.
    pub(super) fn invalidate_session_at(&mut self, idx: u64, id: &str, now: Instant) {
        let Some(session) = self.sessions.remove(id) else {
            return;
        };
        self.sessions_table_index = idx;
        self.commit(idx);
        let held: Vec<String> = self
            .kv
            .values()
            .filter(|e| e.session.as_deref() == Some(id))
            .map(|e| e.key.clone())
            .collect();
        for key in held {
            if !session.lock_delay.is_zero() {
                self.lock_delays
                    .insert(key.clone(), now + session.lock_delay);
            }
            match session.behavior {
                Behavior::Release => {
                    if let Some(e) = self.kv.get(&key).cloned() {
                        self.write_entry(
                            idx,
                            KvEntry {
                                modify_index: idx,
                                session: None,
                                ..e
                            },
                        );
                    }
                }
                Behavior::Delete => {
                    self.delete_key_at(idx, &key);
                }
            }
        }
    }
}
