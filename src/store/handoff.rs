//! A workspace's rows, as they move from one shard's store to another's.
//!
//! Each shard has its own SQLite file (single writer: the shard lock), but a workspace moves
//! between shards when the map changes. Its messages (the log and the queue), idempotency
//! records, undelivered and delivered events and session states must move with it: a message
//! accepted by the old owner is sent by the new one, its acks find it there, a retried
//! `Idempotency-Key` is still recognised, and an event stream resumes by event id.
//!
//! [`Store::export_workspace`] reads all of it in one read transaction into a
//! [`WorkspaceRecord`] (plain serde, written to a file by the worker), [`Store::forget_workspace`]
//! deletes it from the old store once that file is durable, and [`Store::import_workspace`]
//! *replaces* the new store's rows for the workspace with the record in one write transaction.
//! Replacing, not merging, is what makes the protocol safe to repeat: the record is the
//! workspace's latest state (its owner held the workspace lock until it was written), so
//! whatever the importer held about the workspace is an older copy — e.g. rows left behind by
//! a crash between a record being written and the old rows being forgotten.

use serde::{Deserialize, Serialize};

use super::{Store, StoreError};
use crate::ids::WorkspaceId;

/// The record format; a reader refuses other versions.
pub const RECORD_VERSION: u32 = 1;

/// Everything one shard store holds about one workspace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkspaceRecord {
    /// [`RECORD_VERSION`].
    pub version: u32,
    /// The workspace.
    pub workspace: String,
    /// The message log (every status, not only queued).
    pub messages: Vec<MessageRow>,
    /// The send queue, in FIFO order.
    pub queue: Vec<QueueRow>,
    /// Idempotency records, expired ones included (maintenance purges them).
    pub idempotency: Vec<IdempotencyRow>,
    /// The outbox, in event order.
    pub outbox: Vec<OutboxRow>,
    /// Per-target webhook deliveries of those events (absent in records of workers before
    /// per-target delivery: their pending and dead events go to the session's first target).
    #[serde(default)]
    pub deliveries: Vec<DeliveryRow>,
    /// The last known status of each session.
    pub session_states: Vec<SessionStateRow>,
}

impl WorkspaceRecord {
    /// Messages still waiting to be sent.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Events not delivered yet (to at least one target) or not expanded yet.
    pub fn pending_events(&self) -> usize {
        self.outbox
            .iter()
            .filter(|e| e.state == "pending" || e.fanned == Some(0))
            .count()
    }

    /// Ids of queued messages whose send was in flight when the record was taken.
    pub fn claimed(&self) -> Vec<String> {
        self.queue
            .iter()
            .filter(|q| q.claimed_at.is_some())
            .map(|q| q.message_id.clone())
            .collect()
    }
}

/// A row of `messages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[allow(missing_docs)]
pub struct MessageRow {
    pub id: String,
    pub session: String,
    pub recipient: String,
    pub kind: String,
    pub body: String,
    pub status: String,
    pub reason: Option<String>,
    pub wa_id: Option<String>,
    pub attempts: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub sent_at: Option<i64>,
}

/// A row of `send_queue` (its `seq` is the importer's own; the order is the vector's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[allow(missing_docs)]
pub struct QueueRow {
    pub message_id: String,
    pub session: String,
    pub not_before: i64,
    pub claimed_at: Option<i64>,
}

/// A row of `idempotency_keys`; the stored response body travels as base64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[allow(missing_docs)]
pub struct IdempotencyRow {
    pub idem_key: String,
    pub request_hash: String,
    pub status: i64,
    #[serde(with = "b64")]
    pub body: Vec<u8>,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A row of `outbox` (its `seq` is the importer's own; the order is the vector's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[allow(missing_docs)]
pub struct OutboxRow {
    pub id: String,
    pub session: String,
    pub event: String,
    pub envelope: String,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
    pub dead_at: Option<i64>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    /// Expanded into deliveries (`None` in records of workers before per-target delivery).
    #[serde(default)]
    pub fanned: Option<i64>,
}

/// A row of `deliveries`, naming its event by id (the importer's `seq` differs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[allow(missing_docs)]
pub struct DeliveryRow {
    pub event_id: String,
    pub target: String,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub delivered_at: Option<i64>,
    pub dead_at: Option<i64>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
}

/// A row of `session_states`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[allow(missing_docs)]
pub struct SessionStateRow {
    pub session: String,
    pub status: String,
    pub updated_at: i64,
}

mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// The tables a workspace has rows in, children before parents (the queue references
/// messages), which is the order they are deleted in.
const TABLES: [&str; 6] = [
    "send_queue",
    "messages",
    "idempotency_keys",
    "deliveries",
    "outbox",
    "session_states",
];

// === impl Store ===

impl Store {
    /// Reads every row of `ws` in one consistent snapshot.
    pub async fn export_workspace(&self, ws: &WorkspaceId) -> Result<WorkspaceRecord, StoreError> {
        // A read transaction: every table from the same snapshot (a writer may commit between
        // two statements otherwise).
        let mut tx = self.pool.begin().await?;
        let w = ws.as_str();
        let messages = sqlx::query_as::<_, MessageRow>(
            "SELECT id, session, recipient, kind, body, status, reason, wa_id, attempts,
                    created_at, updated_at, sent_at
             FROM messages WHERE workspace = ? ORDER BY created_at, id",
        )
        .bind(w)
        .fetch_all(&mut *tx)
        .await?;
        let queue = sqlx::query_as::<_, QueueRow>(
            "SELECT message_id, session, not_before, claimed_at
             FROM send_queue WHERE workspace = ? ORDER BY seq",
        )
        .bind(w)
        .fetch_all(&mut *tx)
        .await?;
        let idempotency = sqlx::query_as::<_, IdempotencyRow>(
            "SELECT idem_key, request_hash, status, body, created_at, expires_at
             FROM idempotency_keys WHERE workspace = ? ORDER BY idem_key",
        )
        .bind(w)
        .fetch_all(&mut *tx)
        .await?;
        let outbox = sqlx::query_as::<_, OutboxRow>(
            "SELECT id, session, event, envelope, state, attempts, next_attempt_at, created_at,
                    delivered_at, dead_at, last_status, last_error, fanned
             FROM outbox WHERE workspace = ? ORDER BY seq",
        )
        .bind(w)
        .fetch_all(&mut *tx)
        .await?;
        let deliveries = sqlx::query_as::<_, DeliveryRow>(
            "SELECT o.id AS event_id, d.target, d.state, d.attempts, d.next_attempt_at,
                    d.delivered_at, d.dead_at, d.last_status, d.last_error
             FROM deliveries d JOIN outbox o ON o.seq = d.seq
             WHERE d.workspace = ? ORDER BY d.seq, d.target",
        )
        .bind(w)
        .fetch_all(&mut *tx)
        .await?;
        let session_states = sqlx::query_as::<_, SessionStateRow>(
            "SELECT session, status, updated_at FROM session_states
             WHERE workspace = ? ORDER BY session",
        )
        .bind(w)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(WorkspaceRecord {
            version: RECORD_VERSION,
            workspace: w.to_owned(),
            messages,
            queue,
            idempotency,
            outbox,
            deliveries,
            session_states,
        })
    }

    /// Deletes every row of `ws` (after its record is durable elsewhere), in one transaction.
    pub async fn forget_workspace(&self, ws: &WorkspaceId) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        delete_rows(&mut tx, ws).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces every row of the record's workspace with the record's, in one transaction;
    /// wakes the send queue and webhook delivery when there is work.
    pub async fn import_workspace(&self, record: &WorkspaceRecord) -> Result<(), StoreError> {
        if record.version != RECORD_VERSION {
            return Err(StoreError::Corrupt(format!(
                "workspace record version {} (this worker reads {RECORD_VERSION})",
                record.version
            )));
        }
        let ws = WorkspaceId::new(record.workspace.clone())
            .map_err(|e| StoreError::Corrupt(format!("workspace record: {e}")))?;
        let w = ws.as_str();
        let mut tx = self.begin_write().await?;
        delete_rows(&mut tx, &ws).await?;
        for m in &record.messages {
            sqlx::query(
                "INSERT INTO messages (id, workspace, session, recipient, kind, body, status,
                     reason, wa_id, attempts, created_at, updated_at, sent_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&m.id)
            .bind(w)
            .bind(&m.session)
            .bind(&m.recipient)
            .bind(&m.kind)
            .bind(&m.body)
            .bind(&m.status)
            .bind(&m.reason)
            .bind(&m.wa_id)
            .bind(m.attempts)
            .bind(m.created_at)
            .bind(m.updated_at)
            .bind(m.sent_at)
            .execute(&mut *tx)
            .await?;
        }
        for q in &record.queue {
            sqlx::query(
                "INSERT INTO send_queue (message_id, workspace, session, not_before, claimed_at)
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(&q.message_id)
            .bind(w)
            .bind(&q.session)
            .bind(q.not_before)
            .bind(q.claimed_at)
            .execute(&mut *tx)
            .await?;
        }
        for k in &record.idempotency {
            sqlx::query(
                "INSERT INTO idempotency_keys (workspace, idem_key, request_hash, status, body,
                     created_at, expires_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(w)
            .bind(&k.idem_key)
            .bind(&k.request_hash)
            .bind(k.status)
            .bind(&k.body)
            .bind(k.created_at)
            .bind(k.expires_at)
            .execute(&mut *tx)
            .await?;
        }
        for e in &record.outbox {
            sqlx::query(
                "INSERT INTO outbox (id, workspace, session, event, envelope, state, attempts,
                     next_attempt_at, created_at, delivered_at, dead_at, last_status, last_error,
                     fanned)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&e.id)
            .bind(w)
            .bind(&e.session)
            .bind(&e.event)
            .bind(&e.envelope)
            .bind(&e.state)
            .bind(e.attempts)
            .bind(e.next_attempt_at)
            .bind(e.created_at)
            .bind(e.delivered_at)
            .bind(e.dead_at)
            .bind(e.last_status)
            .bind(&e.last_error)
            .bind(e.fanned.unwrap_or(1))
            .execute(&mut *tx)
            .await?;
            // A record of the single-webhook schema: as the migration does, its pending and
            // dead events become deliveries to the session's first target.
            if e.fanned.is_none() && matches!(e.state.as_str(), "pending" | "dead") {
                sqlx::query(
                    "INSERT INTO deliveries (seq, target, workspace, session, state, attempts,
                         next_attempt_at, delivered_at, dead_at, last_status, last_error)
                     SELECT seq, '', workspace, session, state, attempts, next_attempt_at,
                            delivered_at, dead_at, last_status, last_error
                     FROM outbox WHERE id = ?",
                )
                .bind(&e.id)
                .execute(&mut *tx)
                .await?;
            }
        }
        for d in &record.deliveries {
            sqlx::query(
                "INSERT INTO deliveries (seq, target, workspace, session, state, attempts,
                     next_attempt_at, delivered_at, dead_at, last_status, last_error)
                 SELECT seq, ?, workspace, session, ?, ?, ?, ?, ?, ?, ?
                 FROM outbox WHERE id = ? AND workspace = ?",
            )
            .bind(&d.target)
            .bind(&d.state)
            .bind(d.attempts)
            .bind(d.next_attempt_at)
            .bind(d.delivered_at)
            .bind(d.dead_at)
            .bind(d.last_status)
            .bind(&d.last_error)
            .bind(&d.event_id)
            .bind(w)
            .execute(&mut *tx)
            .await?;
        }
        for s in &record.session_states {
            sqlx::query(
                "INSERT INTO session_states (workspace, session, status, updated_at)
                 VALUES (?, ?, ?, ?)",
            )
            .bind(w)
            .bind(&s.session)
            .bind(&s.status)
            .bind(s.updated_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        if !record.queue.is_empty() {
            self.notify_queue();
        }
        if record.pending_events() > 0 {
            self.notify_outbox();
        }
        Ok(())
    }
}

async fn delete_rows(
    conn: &mut sqlx::SqliteConnection,
    ws: &WorkspaceId,
) -> Result<(), StoreError> {
    for table in TABLES {
        let sql = format!("DELETE FROM {table} WHERE workspace = ?");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ws.as_str())
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
