//! The KV store: reads (get, list, keys), writes (set, CAS, lock, unlock, delete, delete-tree)
//! and transactions, each change stamped with one new index.
//!
//! Apart from `state.rs` because the KV rules (Consul's `kvsSetTxn` and friends) are its largest
//! part.

use super::*;

impl State {
    // --- KV reads ---

    /// KV table index (entries and tombstones); never below 1 so blocking clients do not spin.
    pub fn kv_index(&self) -> u64 {
        self.kv_table_index.max(1)
    }

    /// One key and the index to report (`kvsMaxIndex`: the whole table's).
    pub fn kv_get(&self, key: &str) -> (Option<&KvEntry>, u64) {
        (self.kv.get(key), self.kv_index())
    }

    /// Every entry under a prefix and the index to report: the highest `ModifyIndex` of the
    /// entries and tombstones under the prefix, falling back to the table index.
    pub fn kv_list(&self, prefix: &str) -> (Vec<&KvEntry>, u64) {
        let entries: Vec<&KvEntry> = self
            .kv
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, e)| e)
            .collect();
        // Listing everything reports the whole table's index, as `kvsListTxn` does.
        if prefix.is_empty() {
            return (entries, self.kv_index());
        }
        let mut idx = entries.iter().map(|e| e.modify_index).max().unwrap_or(0);
        let tomb = self
            .tombstones
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, i)| *i)
            .max()
            .unwrap_or(0);
        idx = idx.max(tomb);
        if idx == 0 {
            idx = self.kv_index();
        }
        (entries, idx)
    }

    /// Keys under a prefix, rolled up at the first `separator` after the prefix.
    pub fn kv_keys(&self, prefix: &str, separator: Option<&str>) -> (Vec<String>, u64) {
        let (entries, idx) = self.kv_list(prefix);
        let mut out: Vec<String> = Vec::new();
        for e in entries {
            let key = match separator.filter(|s| !s.is_empty()) {
                Some(sep) => match e.key[prefix.len()..].find(sep) {
                    Some(pos) => e.key[..prefix.len() + pos + sep.len()].to_string(),
                    None => e.key.clone(),
                },
                None => e.key.clone(),
            };
            if out.last() != Some(&key) {
                out.push(key);
            }
        }
        (out, idx)
    }

    /// End of the lock delay on a key, if one is running at `now`.
    pub fn lock_delay_until(&self, key: &str, now: Instant) -> Option<Instant> {
        self.lock_delays.get(key).copied().filter(|t| *t > now)
    }

    // --- KV writes ---

    /// `PUT /v1/kv/<key>`: returns the `true`/`false` body.
    pub fn kv_put(
        &mut self,
        key: &str,
        value: Vec<u8>,
        flags: u64,
        mode: PutMode,
        now: Instant,
    ) -> Result<bool, StateError> {
        if key.is_empty() {
            return Err(StateError::BadRequest("Missing key name".to_string()));
        }
        if value.len() > MAX_KV_VALUE_BYTES {
            return Err(StateError::TooLarge(format!(
                "Request body({} bytes) too large, max size: {} bytes. See https://developer.hashicorp.com/consul/docs/agent/config/config-files#kv_max_value_size.",
                value.len(),
                MAX_KV_VALUE_BYTES
            )));
        }
        let idx = self.next_index();
        let ok = match mode {
            PutMode::Set => {
                self.kv_set_at(idx, key, value, flags);
                true
            }
            PutMode::Cas(cas) => self.kv_cas_at(idx, key, value, flags, cas),
            PutMode::Acquire(session) => {
                // Lock delay is enforced before the write, as in Consul's KVS.Apply endpoint.
                if self.lock_delay_until(key, now).is_some() {
                    false
                } else {
                    self.kv_lock_at(idx, key, value, flags, &session)?
                }
            }
            PutMode::Release(session) => self.kv_unlock_at(idx, key, value, flags, &session)?,
        };
        Ok(ok)
    }

    /// Sets a key at `idx` like Consul's `kvsSetTxn` without `updateSession`: the holder
    /// (`Session`) is kept, but `LockIndex` takes the request's value, which is always 0 for a
    /// plain or CAS write — so a plain PUT on a held key resets its `LockIndex` to 0, as in
    /// Consul. An identical entry (value, flags, lock index, session) changes nothing.
    pub(super) fn kv_set_at(&mut self, idx: u64, key: &str, value: Vec<u8>, flags: u64) {
        let lock_index = 0;
        let (create_index, session) = match self.kv.get(key) {
            Some(e) => {
                if e.value == value && e.flags == flags && e.lock_index == lock_index {
                    return;
                }
                (e.create_index, e.session.clone())
            }
            None => (idx, None),
        };
        self.write_entry(
            idx,
            KvEntry {
                key: key.to_string(),
                create_index,
                modify_index: idx,
                lock_index,
                flags,
                value,
                session,
            },
        );
    }

    pub(super) fn write_entry(&mut self, idx: u64, entry: KvEntry) {
        self.tombstones.remove(&entry.key);
        self.kv.insert(entry.key.clone(), entry);
        self.kv_table_index = idx;
        self.commit(idx);
    }

    pub(super) fn kv_cas_at(
        &mut self,
        idx: u64,
        key: &str,
        value: Vec<u8>,
        flags: u64,
        cas: u64,
    ) -> bool {
        match (self.kv.get(key), cas) {
            (Some(_), 0) => return false,
            (None, c) if c != 0 => return false,
            (Some(e), c) if e.modify_index != c => return false,
            _ => {}
        }
        self.kv_set_at(idx, key, value, flags);
        true
    }

    pub(super) fn kv_lock_at(
        &mut self,
        idx: u64,
        key: &str,
        value: Vec<u8>,
        flags: u64,
        session: &str,
    ) -> Result<bool, StateError> {
        if session.is_empty() {
            return Err(StateError::Internal("missing session".to_string()));
        }
        if !self.sessions.contains_key(session) {
            return Err(StateError::Internal(format!("invalid session {session:?}")));
        }
        let (create_index, lock_index) = match self.kv.get(key) {
            Some(e) => match e.session.as_deref() {
                Some(holder) if holder == session => {
                    if e.value == value && e.flags == flags {
                        return Ok(true);
                    }
                    (e.create_index, e.lock_index)
                }
                Some(_) => return Ok(false),
                None => (e.create_index, e.lock_index + 1),
            },
            None => (idx, 1),
        };
        self.write_entry(
            idx,
            KvEntry {
                key: key.to_string(),
                create_index,
                modify_index: idx,
                lock_index,
                flags,
                value,
                session: Some(session.to_string()),
            },
        );
        Ok(true)
    }

    pub(super) fn kv_unlock_at(
        &mut self,
        idx: u64,
        key: &str,
        value: Vec<u8>,
        flags: u64,
        session: &str,
    ) -> Result<bool, StateError> {
        if session.is_empty() {
            return Err(StateError::Internal("missing session".to_string()));
        }
        let Some(e) = self.kv.get(key) else {
            return Ok(false);
        };
        if e.session.as_deref() != Some(session) {
            return Ok(false);
        }
        let entry = KvEntry {
            key: key.to_string(),
            create_index: e.create_index,
            modify_index: idx,
            lock_index: e.lock_index,
            flags,
            value,
            session: None,
        };
        self.write_entry(idx, entry);
        Ok(true)
    }

    /// `DELETE /v1/kv/<key>`: returns the `true`/`false` body.
    pub fn kv_delete(&mut self, key: &str, mode: DeleteMode) -> Result<bool, StateError> {
        let idx = self.next_index();
        match mode {
            DeleteMode::Single => {
                if key.is_empty() {
                    return Err(StateError::BadRequest("Missing key name".to_string()));
                }
                self.delete_key_at(idx, key);
                Ok(true)
            }
            DeleteMode::Tree => {
                self.delete_tree_at(idx, key);
                Ok(true)
            }
            DeleteMode::Cas(cas) => {
                if key.is_empty() {
                    return Err(StateError::BadRequest("Missing key name".to_string()));
                }
                Ok(self.delete_cas_at(idx, key, cas))
            }
        }
    }

    pub(super) fn delete_key_at(&mut self, idx: u64, key: &str) -> bool {
        if self.kv.remove(key).is_some() {
            self.tombstones.insert(key.to_string(), idx);
            self.kv_table_index = idx;
            self.commit(idx);
            true
        } else {
            false
        }
    }

    pub(super) fn delete_tree_at(&mut self, idx: u64, prefix: &str) {
        let keys: Vec<String> = self
            .kv
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.delete_key_at(idx, &k);
        }
    }

    /// CAS delete; a missing key counts as success (`kvsDeleteCASTxn`).
    pub(super) fn delete_cas_at(&mut self, idx: u64, key: &str, cas: u64) -> bool {
        match self.kv.get(key) {
            None => true,
            Some(e) if e.modify_index != cas => false,
            Some(_) => {
                self.delete_key_at(idx, key);
                true
            }
        }
    }

    // --- transactions ---

    /// `PUT /v1/txn` with KV operations: all or nothing, one index for the whole transaction.
    pub fn txn(&mut self, ops: &[TxnKvOp], now: Instant) -> Result<Vec<TxnResult>, Vec<TxnError>> {
        let snapshot = self.clone();
        let idx = self.next_index();
        let mut results = Vec::new();
        let mut errors = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            match self.txn_op(idx, op, now) {
                Ok(mut r) => results.append(&mut r),
                Err(what) => errors.push(TxnError { op_index: i, what }),
            }
        }
        if errors.is_empty() {
            Ok(results)
        } else {
            *self = snapshot;
            Err(errors)
        }
    }

    pub(super) fn txn_op(
        &mut self,
        idx: u64,
        op: &TxnKvOp,
        now: Instant,
    ) -> Result<Vec<TxnResult>, String> {
        let key = op.key.as_str();
        let read = |e: &KvEntry| TxnResult {
            entry: e.clone(),
            with_value: true,
        };
        let written = |s: &State| -> Vec<TxnResult> {
            s.kv.get(key)
                .map(|e| TxnResult {
                    entry: e.clone(),
                    with_value: false,
                })
                .into_iter()
                .collect()
        };
        if op.value.len() > MAX_KV_VALUE_BYTES {
            return Err(format!("value for key {key:?} is too large"));
        }
        match op.verb.as_str() {
            "set" => {
                if key.is_empty() {
                    return Err("Missing key name".to_string());
                }
                self.kv_set_at(idx, key, op.value.clone(), op.flags);
                Ok(written(self))
            }
            "cas" => {
                if self.kv_cas_at(idx, key, op.value.clone(), op.flags, op.index) {
                    Ok(written(self))
                } else {
                    Err(format!("failed to set key {key:?}, index is stale"))
                }
            }
            "lock" => {
                if self.lock_delay_until(key, now).is_some() {
                    return Err(format!("failed to lock key {key:?} due to lock delay"));
                }
                match self.kv_lock_at(idx, key, op.value.clone(), op.flags, &op.session) {
                    Ok(true) => Ok(written(self)),
                    Ok(false) => Err(format!("failed to lock key {key:?}, lock is already held")),
                    Err(e) => Err(e.to_string()),
                }
            }
            "unlock" => {
                match self.kv_unlock_at(idx, key, op.value.clone(), op.flags, &op.session) {
                    Ok(true) => Ok(written(self)),
                    Ok(false) => Err(format!(
                        "failed to unlock key {key:?}, lock isn't held, or is held by another session"
                    )),
                    Err(e) => Err(e.to_string()),
                }
            }
            "get" => match self.kv.get(key) {
                Some(e) => Ok(vec![read(e)]),
                None => Err(format!("key {key:?} doesn't exist")),
            },
            "get-or-empty" => Ok(self.kv.get(key).map(read).into_iter().collect()),
            "get-tree" => Ok(self.kv_list(key).0.into_iter().map(read).collect()),
            "check-index" => match self.kv.get(key) {
                Some(e) if e.modify_index == op.index => Ok(vec![TxnResult {
                    entry: e.clone(),
                    with_value: false,
                }]),
                Some(e) => Err(format!(
                    "failed index check for key {key:?}, current modify index {} != {}",
                    e.modify_index, op.index
                )),
                None => Err(format!("failed to check index, key {key:?} doesn't exist")),
            },
            "check-session" => match self.kv.get(key) {
                Some(e) if e.session.as_deref().unwrap_or("") == op.session => {
                    Ok(vec![TxnResult {
                        entry: e.clone(),
                        with_value: false,
                    }])
                }
                Some(e) => Err(format!(
                    "failed session check for key {key:?}, current session {:?} != {:?}",
                    e.session.as_deref().unwrap_or(""),
                    op.session
                )),
                None => Err(format!(
                    "failed to check session, key {key:?} doesn't exist"
                )),
            },
            "check-not-exists" => match self.kv.get(key) {
                Some(_) => Err(format!("key {key:?} exists")),
                None => Ok(Vec::new()),
            },
            "delete" => {
                self.delete_key_at(idx, key);
                Ok(Vec::new())
            }
            "delete-tree" => {
                self.delete_tree_at(idx, key);
                Ok(Vec::new())
            }
            "delete-cas" => {
                if self.delete_cas_at(idx, key, op.index) {
                    Ok(Vec::new())
                } else {
                    Err(format!("failed to delete key {key:?}, index is stale"))
                }
            }
            other => Err(format!("unknown KV verb {other:?}")),
        }
    }
}
