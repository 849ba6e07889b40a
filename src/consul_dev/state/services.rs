//! Service and check registration: upserts, owners, deregistration, and the sessions a check
//! invalidates.
//!
//! Apart from `state.rs` because the service table is its own set of Consul rules
//! (`agent/local`, `catalog`).

use super::*;

impl State {
    // --- services and checks ---

    pub(super) fn touch_service_name(&mut self, idx: u64, name: &str) {
        self.service_name_index.insert(name.to_string(), idx);
        self.commit(idx);
    }

    /// `PUT /v1/agent/service/register`.
    pub fn register_service(
        &mut self,
        reg: ServiceRegistration,
        now: Instant,
    ) -> Result<(), StateError> {
        if reg.name.is_empty() {
            return Err(StateError::BadRequest("Missing service name".to_string()));
        }
        let id = reg
            .id
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| reg.name.clone());
        // Validate every check before changing anything.
        for c in &reg.checks {
            if c.ttl.is_none() && c.http.is_some() && c.interval.is_none_or(|i| i.is_zero()) {
                return Err(StateError::BadRequest(
                    "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, or TCP checks"
                        .to_string(),
                ));
            }
        }
        let idx = self.next_index();
        let previous = self.services.get(&id).cloned();
        if let Some(prev) = &previous
            && prev.name != reg.name
        {
            self.touch_service_name(idx, &prev.name.clone());
        }
        let entry = ServiceEntry {
            id: id.clone(),
            name: reg.name.clone(),
            tags: reg.tags.clone(),
            meta: reg.meta.clone(),
            address: reg.address.clone(),
            port: reg.port,
            weights: reg.weights.unwrap_or((1, 1)),
            enable_tag_override: reg.enable_tag_override,
            create_index: previous.as_ref().map(|p| p.create_index).unwrap_or(idx),
            modify_index: idx,
        };
        let service_changed = previous
            .as_ref()
            .map(|p| {
                ServiceEntry {
                    modify_index: idx,
                    ..p.clone()
                } != entry
            })
            .unwrap_or(true);
        if service_changed {
            self.services.insert(id.clone(), entry);
            self.services_table_index = idx;
        }
        let multiple = reg.checks.len() > 1;
        let mut new_ids = BTreeSet::new();
        for (n, def) in reg.checks.into_iter().enumerate() {
            let check_id = def
                .check_id
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| {
                    if multiple {
                        format!("service:{id}:{}", n + 1)
                    } else {
                        format!("service:{id}")
                    }
                });
            new_ids.insert(check_id.clone());
            self.upsert_check(idx, &check_id, &def, Some((&id, &reg.name, &reg.tags)), now);
        }
        if reg.replace_existing_checks {
            let stale: Vec<String> = self
                .checks
                .values()
                .filter(|c| c.service_id == id && !new_ids.contains(&c.id))
                .map(|c| c.id.clone())
                .collect();
            for cid in stale {
                self.remove_check_at(idx, &cid, now);
            }
        }
        // Service tags are copied into its checks.
        let tags = reg.tags;
        for c in self.checks.values_mut().filter(|c| c.service_id == id) {
            if c.service_tags != tags {
                c.service_tags = tags.clone();
                c.modify_index = idx;
            }
        }
        if service_changed {
            self.touch_service_name(idx, &reg.name);
        }
        Ok(())
    }

    /// Inserts or updates one check at `idx`; indexes only move when something observable
    /// changed. `owner` is (service ID, service name, tags); `None` = a node-level check.
    pub(super) fn upsert_check(
        &mut self,
        idx: u64,
        check_id: &str,
        def: &CheckDefinition,
        owner: Option<(&str, &str, &[String])>,
        now: Instant,
    ) {
        let prev = self.checks.get(check_id).cloned();
        let kind = if let Some(ttl) = def.ttl {
            CheckKind::Ttl {
                ttl,
                expires_at: match &prev {
                    Some(CheckEntry {
                        kind: CheckKind::Ttl { expires_at, .. },
                        ..
                    }) => *expires_at,
                    _ => now + ttl,
                },
            }
        } else if let Some(url) = def.http.clone() {
            CheckKind::Http {
                url,
                method: def.method.clone().unwrap_or_else(|| "GET".to_string()),
                header: def.header.clone(),
                interval: def
                    .interval
                    .unwrap_or(Duration::from_secs(10))
                    .max(self.cfg.min_check_interval),
                timeout: def.timeout.unwrap_or(Duration::from_secs(10)),
                tls_skip_verify: def.tls_skip_verify,
                next_run: now,
            }
        } else {
            CheckKind::Other
        };
        // Re-registration keeps the current status of a check of the same kind, so that a
        // periodic re-register does not flap the instance to critical.
        let same_kind = prev
            .as_ref()
            .is_some_and(|p| std::mem::discriminant(&p.kind) == std::mem::discriminant(&kind));
        let (status, output, critical_since) = match (&prev, def.status) {
            (_, Some(s)) => (s, String::new(), (s == Status::Critical).then_some(now)),
            (Some(p), None) if same_kind => (p.status, p.output.clone(), p.critical_since),
            _ => (Status::Critical, String::new(), Some(now)),
        };
        let deregister_critical_after = def
            .deregister_critical_after
            .map(|d| d.max(self.cfg.deregister_critical_min));
        let (service_id, service_name, service_tags) = match owner {
            Some((id, name, tags)) => (id.to_string(), name.to_string(), tags.to_vec()),
            None => (String::new(), String::new(), Vec::new()),
        };
        let default_name = if service_name.is_empty() {
            check_id.to_string()
        } else {
            format!("Service '{service_name}' check")
        };
        let check = CheckEntry {
            id: check_id.to_string(),
            name: def
                .name
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or(default_name),
            status,
            notes: def.notes.clone(),
            output,
            service_id,
            service_name: service_name.clone(),
            service_tags,
            kind,
            deregister_critical_after,
            critical_since,
            create_index: prev.as_ref().map(|p| p.create_index).unwrap_or(idx),
            modify_index: idx,
        };
        let changed = prev
            .as_ref()
            .map(|p| !same_check(p, &check))
            .unwrap_or(true);
        let became_critical = check.status == Status::Critical
            && prev.as_ref().is_some_and(|p| p.status != Status::Critical);
        if changed {
            // A check moved to another service: that service's watchers must wake too.
            if let Some(p) = &prev
                && p.service_name != service_name
            {
                self.touch_check_owner(idx, &p.service_name.clone());
            }
            self.checks.insert(check_id.to_string(), check);
            self.checks_table_index = idx;
            self.touch_check_owner(idx, &service_name);
            if became_critical {
                self.invalidate_sessions_with_check(idx, check_id, now);
            }
        } else if let Some(p) = prev {
            // Same observable check: keep its indexes but take the new timer settings.
            self.checks.insert(
                check_id.to_string(),
                CheckEntry {
                    modify_index: p.modify_index,
                    ..check
                },
            );
        }
    }

    /// Moves the index of the service a check belongs to; a node check (empty name) affects
    /// every service on the node.
    pub(super) fn touch_check_owner(&mut self, idx: u64, service_name: &str) {
        if service_name.is_empty() {
            let names: Vec<String> = self.services.values().map(|s| s.name.clone()).collect();
            for n in names {
                self.touch_service_name(idx, &n);
            }
            self.commit(idx);
        } else {
            self.touch_service_name(idx, service_name);
        }
    }

    /// `PUT /v1/agent/check/register`: a check on an existing service, or a node-level check
    /// (which then appears in, and can make critical, every service on the node).
    pub fn register_check(
        &mut self,
        def: CheckDefinition,
        service_id: Option<&str>,
        now: Instant,
    ) -> Result<(), StateError> {
        // Consul requires a name; the ID defaults to it.
        let Some(name) = def.name.clone().filter(|s| !s.is_empty()) else {
            return Err(StateError::BadRequest("Missing check name".to_string()));
        };
        let check_id = def
            .check_id
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or(name);
        if def.ttl.is_none() && def.http.is_some() && def.interval.is_none_or(|i| i.is_zero()) {
            return Err(StateError::BadRequest(
                "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, or TCP checks"
                    .to_string(),
            ));
        }
        let owner = match service_id.filter(|s| !s.is_empty()) {
            Some(sid) => match self.services.get(sid) {
                Some(s) => Some((s.id.clone(), s.name.clone(), s.tags.clone())),
                None => {
                    return Err(StateError::BadRequest(format!(
                        "ServiceID {sid:?} does not exist"
                    )));
                }
            },
            None => None,
        };
        let idx = self.next_index();
        let owner_ref = owner
            .as_ref()
            .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_slice()));
        self.upsert_check(idx, &check_id, &def, owner_ref, now);
        Ok(())
    }

    /// `PUT /v1/agent/check/deregister/<id>` (no-op when unknown).
    pub fn deregister_check(&mut self, check_id: &str, now: Instant) {
        let idx = self.next_index();
        self.remove_check_at(idx, check_id, now);
    }

    pub(super) fn remove_check_at(&mut self, idx: u64, check_id: &str, now: Instant) {
        if let Some(c) = self.checks.remove(check_id) {
            self.checks_table_index = idx;
            self.touch_check_owner(idx, &c.service_name);
            self.invalidate_sessions_with_check(idx, check_id, now);
        }
    }

    pub(super) fn invalidate_sessions_with_check(
        &mut self,
        idx: u64,
        check_id: &str,
        now: Instant,
    ) {
        let ids: Vec<String> = self
            .sessions
            .values()
            .filter(|s| {
                s.node_checks.iter().any(|c| c == check_id)
                    || s.service_checks.iter().any(|c| c == check_id)
            })
            .map(|s| s.id.clone())
            .collect();
        for id in ids {
            self.invalidate_session_at(idx, &id, now);
        }
    }

    /// `PUT /v1/agent/service/deregister/<id>`: removes the service and its checks (no-op when
    /// unknown).
    pub fn deregister_service(&mut self, id: &str, now: Instant) {
        let idx = self.next_index();
        self.deregister_service_at(idx, id, now);
    }

    pub(super) fn deregister_service_at(&mut self, idx: u64, id: &str, now: Instant) {
        let Some(svc) = self.services.remove(id) else {
            return;
        };
        self.services_table_index = idx;
        self.touch_service_name(idx, &svc.name);
        let checks: Vec<String> = self
            .checks
            .values()
            .filter(|c| c.service_id == id)
            .map(|c| c.id.clone())
            .collect();
        for cid in checks {
            self.remove_check_at(idx, &cid, now);
        }
    }
}
