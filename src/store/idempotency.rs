//! `Idempotency-Key` records: the first response to a key is kept and replayed.
//!
//! Semantics (issue 5): the same key with the same request (same body hash) returns the stored
//! response; the same key with a different request is a conflict (the API answers 422); an
//! expired record counts as absent and is replaced. Keys are scoped per workspace.

use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{Store, StoreError, db_ms, ms};
use crate::ids::WorkspaceId;

/// How long an `Idempotency-Key` is remembered unless the caller chooses otherwise (24 h, as
/// Stripe does: long enough for any client retry loop).
pub const IDEMPOTENCY_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// A response kept under an idempotency key: status and the exact body bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// HTTP status of the first answer.
    pub status: u16,
    /// Its body.
    pub body: Vec<u8>,
}

/// An idempotency key as presented by a request.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    /// The workspace the key is scoped to.
    pub workspace: WorkspaceId,
    /// The `Idempotency-Key` header value (see [`validate_idempotency_key`]).
    pub key: String,
    /// [`request_hash`] of the request (method, path and body).
    pub request_hash: String,
    /// When the record expires, Unix milliseconds.
    pub expires_at: u64,
}

/// The result of [`Store::idempotency_put_if_absent`] (and of a replayed enqueue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyOutcome {
    /// No live record existed; the response is now stored.
    Stored,
    /// A live record with the same request hash exists: answer with this response.
    Replay(StoredResponse),
}

/// Whether `key` is an acceptable `Idempotency-Key`: 1 to 255 visible ASCII characters.
pub fn validate_idempotency_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= 255 && key.bytes().all(|b| b.is_ascii_graphic())
}

/// SHA-256 (hex) over the parts, each length-prefixed so that `("ab","c")` and `("a","bc")` differ.
/// Pass e.g. `[method, path, body]`.
pub fn request_hash(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())
}

// === impl Store ===

impl Store {
    /// Looks a live key up: `None` if absent or expired, `Some(Replay)` if the request matches,
    /// `Err(IdempotencyConflict)` if it does not.
    pub async fn idempotency_lookup(
        &self,
        key: &IdempotencyKey,
        now_ms: u64,
    ) -> Result<Option<StoredResponse>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        lookup(&mut conn, key, now_ms).await
    }

    /// Stores `response` under `key` unless a live record exists (then: replay or conflict, as
    /// for [`Store::idempotency_lookup`]). An expired record is replaced.
    pub async fn idempotency_put_if_absent(
        &self,
        key: &IdempotencyKey,
        response: &StoredResponse,
        now_ms: u64,
    ) -> Result<IdempotencyOutcome, StoreError> {
        let mut tx = self.begin_write().await?;
        if let Some(stored) = lookup(&mut tx, key, now_ms).await? {
            return Ok(IdempotencyOutcome::Replay(stored));
        }
        insert(&mut tx, key, response, now_ms).await?;
        tx.commit().await?;
        Ok(IdempotencyOutcome::Stored)
    }

    /// Deletes records expired at `now_ms`; returns how many.
    pub async fn purge_expired_idempotency(&self, now_ms: u64) -> Result<u64, StoreError> {
        let r = sqlx::query("DELETE FROM idempotency_keys WHERE expires_at <= ?")
            .bind(db_ms(now_ms))
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }
}

/// The lookup, usable inside a transaction.
pub(super) async fn lookup(
    conn: &mut sqlx::SqliteConnection,
    key: &IdempotencyKey,
    now_ms: u64,
) -> Result<Option<StoredResponse>, StoreError> {
    let row = sqlx::query(
        "SELECT request_hash, status, body, expires_at FROM idempotency_keys
         WHERE workspace = ? AND idem_key = ?",
    )
    .bind(key.workspace.as_str())
    .bind(&key.key)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    if ms(row.try_get("expires_at")?) <= now_ms {
        return Ok(None);
    }
    let hash: String = row.try_get("request_hash")?;
    if hash != key.request_hash {
        return Err(StoreError::IdempotencyConflict);
    }
    let status: i64 = row.try_get("status")?;
    Ok(Some(StoredResponse {
        status: u16::try_from(status).map_err(|_| StoreError::Corrupt("status".into()))?,
        body: row.try_get("body")?,
    }))
}

/// Inserts (or replaces an expired) record, usable inside a transaction.
pub(super) async fn insert(
    conn: &mut sqlx::SqliteConnection,
    key: &IdempotencyKey,
    response: &StoredResponse,
    now_ms: u64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT OR REPLACE INTO idempotency_keys
           (workspace, idem_key, request_hash, status, body, created_at, expires_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(key.workspace.as_str())
    .bind(&key.key)
    .bind(&key.request_hash)
    .bind(i64::from(response.status))
    .bind(&response.body)
    .bind(db_ms(now_ms))
    .bind(db_ms(key.expires_at))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_hash_is_length_prefixed_and_stable() {
        assert_ne!(request_hash(&[b"ab", b"c"]), request_hash(&[b"a", b"bc"]));
        assert_eq!(request_hash(&[b"x"]), request_hash(&[b"x"]));
        assert_eq!(request_hash(&[]).len(), 64);
    }

    #[test]
    fn key_validation() {
        assert!(validate_idempotency_key("abc-123_ÿ".trim_end_matches('ÿ')));
        assert!(!validate_idempotency_key(""));
        assert!(!validate_idempotency_key("a b"));
        assert!(!validate_idempotency_key(&"k".repeat(256)));
    }
}
