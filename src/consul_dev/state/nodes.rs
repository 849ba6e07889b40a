//! The agent's nodes (join, leave, failure), the check updates the I/O layer feeds in, the
//! clock (`tick`, `next_deadline`) and the catalog and health reads.
//!
//! Apart from `state.rs` because it is the time-driven half of the state machine.

use super::*;

impl State {
    // --- nodes ---

    /// Whether `node` is registered (a node that left is not, until it joins again).
    pub fn has_node(&self, node: &str) -> bool {
        self.nodes.contains_key(node)
    }

    /// Registered node names.
    pub fn node_names(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }

    /// A node joins (again): it is registered with a fresh, passing `serfHealth` check.
    /// Joining a registered node changes nothing.
    pub fn node_join(&mut self, node: &str) {
        if self.nodes.contains_key(node) {
            return;
        }
        self.serf_critical.remove(node);
        let idx = self.next_index();
        self.nodes.insert(node.to_string(), idx);
        if node == self.cfg.node {
            self.node_index = idx;
        }
        self.commit(idx);
    }

    /// A node leaves the cluster gracefully (`consul leave`, or SIGTERM on a client agent with
    /// `leave_on_terminate` on, its default): the node is deregistered from the catalog, and
    /// with it its `serfHealth` check, so every session on it is invalidated (locks released or
    /// deleted, lock delay started) and — for the agent's own node — every service and check it
    /// registered disappears. Returns how many sessions were invalidated. A plain restart
    /// (SIGTERM with `leave_on_terminate = false`, a crash) does **not** call this: the node
    /// stays registered and its sessions survive as long as they are renewed within their TTL.
    pub fn node_leave(&mut self, node: &str, now: Instant) -> usize {
        if self.nodes.remove(node).is_none() {
            return 0;
        }
        self.serf_critical.remove(node);
        let idx = self.next_index();
        self.commit(idx);
        let gone: Vec<String> = self
            .sessions
            .values()
            .filter(|s| s.node == node)
            .map(|s| s.id.clone())
            .collect();
        for id in &gone {
            self.invalidate_session_at(idx, id, now);
        }
        if node == self.cfg.node {
            let ids: Vec<String> = self.services.keys().cloned().collect();
            for id in ids {
                self.deregister_service_at(idx, &id, now);
            }
            let node_checks: Vec<String> = self
                .checks
                .values()
                .filter(|c| c.service_id.is_empty())
                .map(|c| c.id.clone())
                .collect();
            for cid in node_checks {
                self.remove_check_at(idx, &cid, now);
            }
        }
        gone.len()
    }

    /// The servers' failure detector declared `node`'s agent failed (it stopped without
    /// leaving and did not answer the gossip probes for the suspicion timeout): as Consul's
    /// leader does in `handleFailedMember`, the node stays registered but its `serfHealth`
    /// check turns critical, and — as the state store does for any check that turns critical —
    /// every session that lists `serfHealth` among its node checks is invalidated (locks
    /// released or deleted, lock delay started). Sessions created with `NodeChecks: []` are not
    /// touched: they live as long as they are renewed within their TTL. Services and checks
    /// stay in the catalog (health queries show them with a critical `serfHealth`). Returns how
    /// many sessions were invalidated; a node already critical, or not registered, changes
    /// nothing.
    pub fn node_fail(&mut self, node: &str, now: Instant) -> usize {
        if !self.nodes.contains_key(node) || self.serf_critical.contains(node) {
            return 0;
        }
        self.serf_critical.insert(node.to_string());
        let idx = self.next_index();
        self.touch_node_health(idx, node);
        let gone: Vec<String> = self
            .sessions
            .values()
            .filter(|s| s.node == node && s.node_checks.iter().any(|c| c == SERF_CHECK_ID))
            .map(|s| s.id.clone())
            .collect();
        for id in &gone {
            self.invalidate_session_at(idx, id, now);
        }
        gone.len()
    }

    /// `node`'s agent is reachable again (it rejoined the gossip pool): its `serfHealth`
    /// passes again (Consul's `handleAliveMember`). No-op when it was not critical.
    pub fn node_alive(&mut self, node: &str) {
        if !self.serf_critical.remove(node) {
            return;
        }
        let idx = self.next_index();
        self.touch_node_health(idx, node);
    }

    /// Whether `node`'s `serfHealth` is critical.
    pub fn serf_critical(&self, node: &str) -> bool {
        self.serf_critical.contains(node)
    }

    /// A node check of `node` changed status: the catalog and every service on the node see a
    /// new index (their health answers changed).
    pub(super) fn touch_node_health(&mut self, idx: u64, node: &str) {
        if node == self.cfg.node {
            self.node_index = idx;
            self.checks_table_index = idx;
            self.touch_check_owner(idx, "");
        }
        self.commit(idx);
    }

    /// Forgets every service and check, as after an agent restart (fault injection).
    pub fn forget_services(&mut self, now: Instant) {
        let idx = self.next_index();
        let ids: Vec<String> = self.services.keys().cloned().collect();
        for id in ids {
            self.deregister_service_at(idx, &id, now);
        }
    }

    /// `PUT /v1/agent/check/{pass,warn,fail}/<id>`: only TTL checks can be updated.
    pub fn update_ttl_check(
        &mut self,
        check_id: &str,
        status: Status,
        output: &str,
        now: Instant,
    ) -> Result<(), StateError> {
        let Some(check) = self.checks.get_mut(check_id) else {
            return Err(ttl_not_found(check_id));
        };
        let CheckKind::Ttl { ttl, expires_at } = &mut check.kind else {
            return Err(ttl_not_found(check_id));
        };
        *expires_at = now + *ttl;
        self.set_check_status(check_id, status, output, now);
        Ok(())
    }

    /// Records the result of a polled (HTTP) check and schedules its next run.
    pub fn record_check_result(
        &mut self,
        check_id: &str,
        status: Status,
        output: &str,
        now: Instant,
    ) {
        if let Some(CheckEntry {
            kind: CheckKind::Http {
                interval, next_run, ..
            },
            ..
        }) = self.checks.get_mut(check_id)
        {
            *next_run = now + *interval;
        } else {
            return;
        }
        self.set_check_status(check_id, status, output, now);
    }

    /// HTTP checks due at `now`: (check ID, URL, method, headers, timeout, tls_skip_verify).
    /// Their next run is pushed back by one interval so a slow check is not started twice.
    pub fn take_due_http_checks(&mut self, now: Instant) -> Vec<HttpCheckJob> {
        let mut jobs = Vec::new();
        for c in self.checks.values_mut() {
            if let CheckKind::Http {
                url,
                method,
                header,
                interval,
                timeout,
                tls_skip_verify,
                next_run,
            } = &mut c.kind
                && *next_run <= now
            {
                *next_run = now + *interval + *timeout;
                jobs.push(HttpCheckJob {
                    check_id: c.id.clone(),
                    url: url.clone(),
                    method: method.clone(),
                    header: header.clone(),
                    timeout: *timeout,
                    tls_skip_verify: *tls_skip_verify,
                });
            }
        }
        jobs
    }

    pub(super) fn set_check_status(
        &mut self,
        check_id: &str,
        status: Status,
        output: &str,
        now: Instant,
    ) {
        let idx = self.next_index();
        let Some(check) = self.checks.get_mut(check_id) else {
            return;
        };
        if check.status == status && check.output == output {
            return;
        }
        if status == Status::Critical {
            if check.critical_since.is_none() {
                check.critical_since = Some(now);
            }
        } else {
            check.critical_since = None;
        }
        let became_critical = status == Status::Critical && check.status != Status::Critical;
        check.status = status;
        check.output = output.to_string();
        check.modify_index = idx;
        let name = check.service_name.clone();
        self.checks_table_index = idx;
        self.touch_check_owner(idx, &name);
        if became_critical {
            self.invalidate_sessions_with_check(idx, check_id, now);
        }
    }

    /// Applies every timer due at `now`: session TTL expiry, TTL checks turning critical,
    /// services critical for longer than `DeregisterCriticalServiceAfter`. Returns whether
    /// anything changed.
    pub fn tick(&mut self, now: Instant) -> bool {
        let before = self.index;
        let expired: Vec<String> = self
            .sessions
            .values()
            .filter(|s| s.expires_at.is_some_and(|t| t <= now))
            .map(|s| s.id.clone())
            .collect();
        if !expired.is_empty() {
            let idx = self.next_index();
            for id in expired {
                self.invalidate_session_at(idx, &id, now);
            }
        }
        let ttl_expired: Vec<String> = self
            .checks
            .values()
            .filter(|c| {
                c.status != Status::Critical
                    && matches!(c.kind, CheckKind::Ttl { expires_at, .. } if expires_at <= now)
            })
            .map(|c| c.id.clone())
            .collect();
        for cid in ttl_expired {
            self.set_check_status(&cid, Status::Critical, "TTL expired", now);
        }
        let reap: BTreeSet<String> = self
            .checks
            .values()
            .filter(|c| match (c.deregister_critical_after, c.critical_since) {
                (Some(after), Some(since)) => c.status == Status::Critical && since + after <= now,
                _ => false,
            })
            .map(|c| c.service_id.clone())
            .collect();
        if !reap.is_empty() {
            let idx = self.next_index();
            for sid in reap {
                self.deregister_service_at(idx, &sid, now);
            }
        }
        self.index != before
    }

    /// The earliest instant at which [`State::tick`] or an HTTP check has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let sessions = self.sessions.values().filter_map(|s| s.expires_at);
        let checks = self.checks.values().flat_map(|c| {
            let timer = match c.kind {
                CheckKind::Ttl { expires_at, .. } if c.status != Status::Critical => {
                    Some(expires_at)
                }
                CheckKind::Http { next_run, .. } => Some(next_run),
                _ => None,
            };
            let reap = match (c.deregister_critical_after, c.critical_since) {
                (Some(after), Some(since)) => Some(since + after),
                _ => None,
            };
            timer.into_iter().chain(reap)
        });
        sessions.chain(checks).min()
    }

    /// Every registered service instance (`GET /v1/agent/services`).
    pub fn services(&self) -> impl Iterator<Item = &ServiceEntry> {
        self.services.values()
    }

    /// Every registered check.
    pub fn checks(&self) -> impl Iterator<Item = &CheckEntry> {
        self.checks.values()
    }

    /// One service instance by ID.
    pub fn service(&self, id: &str) -> Option<&ServiceEntry> {
        self.services.get(id)
    }

    /// The node's `serfHealth` check: passing, or critical while the failure detector holds
    /// the agent failed ([`State::node_fail`]); the outputs are Consul's.
    pub fn serf_check(&self) -> CheckEntry {
        let failed = self.serf_critical.contains(&self.cfg.node);
        CheckEntry {
            id: SERF_CHECK_ID.to_string(),
            name: "Serf Health Status".to_string(),
            status: if failed {
                Status::Critical
            } else {
                Status::Passing
            },
            notes: String::new(),
            output: if failed {
                "Agent not live or unreachable"
            } else {
                "Agent alive and reachable"
            }
            .to_string(),
            service_id: String::new(),
            service_name: String::new(),
            service_tags: Vec::new(),
            kind: CheckKind::Other,
            deregister_critical_after: None,
            critical_since: None,
            create_index: self.node_index,
            modify_index: self.node_index,
        }
    }

    /// Index of the catalog tables (services and checks).
    pub fn catalog_index(&self) -> u64 {
        self.services_table_index
            .max(self.checks_table_index)
            .max(self.node_index)
    }

    /// Every instance of a service with its checks, and the index for blocking queries: the
    /// service name's own index (or the catalog's when the name was never seen).
    pub fn health_service(&self, name: &str) -> (Vec<HealthEntry>, u64) {
        let entries = self
            .services
            .values()
            .filter(|s| s.name == name)
            .map(|s| {
                let mut checks = vec![self.serf_check()];
                // Node checks first (as Consul lists them), then the instance's own.
                checks.extend(
                    self.checks
                        .values()
                        .filter(|c| c.service_id.is_empty())
                        .cloned(),
                );
                checks.extend(
                    self.checks
                        .values()
                        .filter(|c| c.service_id == s.id)
                        .cloned(),
                );
                HealthEntry {
                    service: s.clone(),
                    checks,
                }
            })
            .collect();
        let idx = self
            .service_name_index
            .get(name)
            .copied()
            .unwrap_or_else(|| self.catalog_index());
        (entries, idx.max(1))
    }

    /// Service name → union of tags (`GET /v1/catalog/services`), with the services index.
    pub fn catalog_services(&self) -> (BTreeMap<String, Vec<String>>, u64) {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        out.insert("consul".to_string(), BTreeSet::new());
        for s in self.services.values() {
            out.entry(s.name.clone())
                .or_default()
                .extend(s.tags.iter().cloned());
        }
        (
            out.into_iter()
                .map(|(k, v)| (k, v.into_iter().collect()))
                .collect(),
            self.services_table_index.max(self.node_index).max(1),
        )
    }

    /// Instances of `name` (optionally with `tag`; both case-insensitive, as DNS is) whose
    /// checks are not critical; `None` when no instance of the service exists at all.
    pub fn dns_instances(&self, name: &str, tag: Option<&str>) -> Option<Vec<ServiceEntry>> {
        let mut any = false;
        let mut out = Vec::new();
        for s in self
            .services
            .values()
            .filter(|s| s.name.eq_ignore_ascii_case(name))
        {
            any = true;
            if tag.is_some_and(|t| !s.tags.iter().any(|x| x.eq_ignore_ascii_case(t))) {
                continue;
            }
            let critical = self.checks.values().any(|c| {
                (c.service_id == s.id || c.service_id.is_empty()) && c.status == Status::Critical
            });
            if !critical {
                out.push(s.clone());
            }
        }
        any.then_some(out)
    }

    /// Every KV entry (for invariant checks in tests).
    pub fn kv_entries(&self) -> impl Iterator<Item = &KvEntry> {
        self.kv.values()
    }
}
