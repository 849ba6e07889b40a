//! Consul's transaction bodies (`PUT /v1/txn`): the KV verbs and operations a request
//! carries, the wire shape of the answer, and its outcome (committed, or rolled back with why).

use serde::{Deserialize, Serialize};

use super::{KvPair, base64_opt, null_default};

/// A KV verb of `PUT /v1/txn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TxnVerb {
    /// Write.
    Set,
    /// Write if `Index` matches (0 = absent).
    Cas,
    /// Acquire with `Session`.
    Lock,
    /// Release with `Session`.
    Unlock,
    /// Read (fails the txn if missing).
    Get,
    /// Read (no failure if missing).
    GetOrEmpty,
    /// Read a subtree.
    GetTree,
    /// Fail unless `ModifyIndex == Index`.
    CheckIndex,
    /// Fail unless held by `Session`.
    CheckSession,
    /// Fail if the key exists.
    CheckNotExists,
    /// Delete.
    Delete,
    /// Delete a subtree.
    DeleteTree,
    /// Delete if `Index` matches.
    DeleteCas,
}

/// One KV operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TxnKvOp {
    /// Verb.
    pub verb: TxnVerb,
    /// Key (validated by the client before sending).
    pub key: String,
    /// Value (base64 on the wire).
    #[serde(with = "base64_opt", skip_serializing_if = "Option::is_none")]
    pub value: Option<Vec<u8>>,
    /// Flags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flags: Option<u64>,
    /// Index for cas / check-index / delete-cas.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    /// Session for lock / unlock / check-session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

impl TxnKvOp {
    fn new(verb: TxnVerb, key: impl Into<String>) -> Self {
        TxnKvOp {
            verb,
            key: key.into(),
            value: None,
            flags: None,
            index: None,
            session: None,
        }
    }
    /// `set`.
    pub fn set(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        TxnKvOp {
            value: Some(value.into()),
            ..Self::new(TxnVerb::Set, key)
        }
    }
    /// `cas` (index 0 = create only).
    pub fn cas(key: impl Into<String>, value: impl Into<Vec<u8>>, index: u64) -> Self {
        TxnKvOp {
            value: Some(value.into()),
            index: Some(index),
            ..Self::new(TxnVerb::Cas, key)
        }
    }
    /// `lock`.
    pub fn lock(key: impl Into<String>, value: impl Into<Vec<u8>>, session: &str) -> Self {
        TxnKvOp {
            value: Some(value.into()),
            session: Some(session.to_owned()),
            ..Self::new(TxnVerb::Lock, key)
        }
    }
    /// `unlock`.
    pub fn unlock(key: impl Into<String>, session: &str) -> Self {
        TxnKvOp {
            session: Some(session.to_owned()),
            ..Self::new(TxnVerb::Unlock, key)
        }
    }
    /// `get`.
    pub fn get(key: impl Into<String>) -> Self {
        Self::new(TxnVerb::Get, key)
    }
    /// `check-index`.
    pub fn check_index(key: impl Into<String>, index: u64) -> Self {
        TxnKvOp {
            index: Some(index),
            ..Self::new(TxnVerb::CheckIndex, key)
        }
    }
    /// `check-session`.
    pub fn check_session(key: impl Into<String>, session: &str) -> Self {
        TxnKvOp {
            session: Some(session.to_owned()),
            ..Self::new(TxnVerb::CheckSession, key)
        }
    }
    /// `check-not-exists`.
    pub fn check_not_exists(key: impl Into<String>) -> Self {
        Self::new(TxnVerb::CheckNotExists, key)
    }
    /// `delete`.
    pub fn delete(key: impl Into<String>) -> Self {
        Self::new(TxnVerb::Delete, key)
    }
    /// `delete-cas`.
    pub fn delete_cas(key: impl Into<String>, index: u64) -> Self {
        TxnKvOp {
            index: Some(index),
            ..Self::new(TxnVerb::DeleteCas, key)
        }
    }
}

/// Wire form of one txn operation: `{"KV": {...}}`.
#[derive(Serialize)]
pub(crate) struct TxnOpWire<'a> {
    #[serde(rename = "KV")]
    pub kv: &'a TxnKvOp,
}

/// One error of a rolled-back transaction.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TxnError {
    /// Index of the failing operation.
    #[serde(default)]
    pub op_index: usize,
    /// Consul's explanation.
    #[serde(default)]
    pub what: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct TxnResultWire {
    #[serde(rename = "KV")]
    pub kv: Option<KvPair>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct TxnResponseWire {
    #[serde(default, deserialize_with = "null_default")]
    pub results: Vec<TxnResultWire>,
    #[serde(default, deserialize_with = "null_default")]
    pub errors: Vec<TxnError>,
}

/// The outcome of `PUT /v1/txn`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOutcome {
    /// 200: every operation applied; the KV results in order (values only for reads).
    Committed(Vec<KvPair>),
    /// 409: nothing applied; why.
    RolledBack(Vec<TxnError>),
}
