//! The webhook / event outbox.
//!
//! Events are appended by the state changes that cause them (same transaction). The delivery
//! task expands each event into one delivery per matching webhook target and delivers those in
//! order per (session, target) ([`super::deliveries`], where the dead letters live too); the
//! outbox row's state summarises its deliveries. Server-sent event streams read the outbox rows
//! in sequence order.

use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{Store, StoreError, db_ms, ms};
use crate::ids::{SessionId, WorkspaceId};
use crate::webhook::Envelope;

/// The delivery state of an outbox event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutboxState {
    /// Waiting for (another) delivery attempt.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// A dead letter: a non-retryable answer or the attempts ran out. Listable and replayable.
    Dead,
    /// No webhook is configured for the session or its filter excludes the event (still streamed
    /// by SSE).
    Skipped,
}

impl OutboxState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Delivered => "delivered",
            OutboxState::Dead => "dead",
            OutboxState::Skipped => "skipped",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "pending" => OutboxState::Pending,
            "delivered" => OutboxState::Delivered,
            "dead" => OutboxState::Dead,
            "skipped" => OutboxState::Skipped,
            other => return Err(StoreError::Corrupt(format!("outbox state {other:?}"))),
        })
    }
}

/// One outbox row.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    /// Commit order.
    pub seq: i64,
    /// `evt_<ulid>`.
    pub id: String,
    /// Workspace.
    pub workspace: WorkspaceId,
    /// Session.
    pub session: SessionId,
    /// Event name.
    pub event: String,
    /// The exact JSON body that is signed and sent.
    pub envelope: String,
    /// Delivery state.
    pub state: OutboxState,
    /// Delivery attempts made.
    pub attempts: u32,
    /// Next attempt not before (Unix ms).
    pub next_attempt_at: u64,
    /// Unix ms.
    pub created_at: u64,
    /// Unix ms.
    pub delivered_at: Option<u64>,
    /// Unix ms.
    pub dead_at: Option<u64>,
    /// HTTP status of the last attempt, if one was received.
    pub last_status: Option<u16>,
    /// What went wrong on the last attempt.
    pub last_error: Option<String>,
}

/// The event columns, for queries that name the outbox `o` (joins with `deliveries d`).
pub(super) const COLUMNS_O: &str = "o.seq, o.id, o.workspace, o.session, o.event, o.envelope,
    o.state, o.attempts, o.next_attempt_at, o.created_at, o.delivered_at, o.dead_at,
    o.last_status, o.last_error";

/// An event from a row selected with [`COLUMNS_O`].
pub(super) fn from_row_prefixed(row: &SqliteRow) -> Result<OutboxEvent, StoreError> {
    let ws: String = row.try_get("workspace")?;
    let s: String = row.try_get("session")?;
    let state: String = row.try_get("state")?;
    let attempts: i64 = row.try_get("attempts")?;
    let delivered: Option<i64> = row.try_get("delivered_at")?;
    let dead: Option<i64> = row.try_get("dead_at")?;
    let status: Option<i64> = row.try_get("last_status")?;
    Ok(OutboxEvent {
        seq: row.try_get("seq")?,
        id: row.try_get("id")?,
        workspace: WorkspaceId::new(ws).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        session: SessionId::new(s).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        event: row.try_get("event")?,
        envelope: row.try_get("envelope")?,
        state: OutboxState::parse(&state)?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        next_attempt_at: ms(row.try_get("next_attempt_at")?),
        created_at: ms(row.try_get("created_at")?),
        delivered_at: delivered.map(ms),
        dead_at: dead.map(ms),
        last_status: status.and_then(|s| u16::try_from(s).ok()),
        last_error: row.try_get("last_error")?,
    })
}

/// Appends an event inside a caller's transaction.
pub(super) async fn insert(
    conn: &mut sqlx::SqliteConnection,
    event: &Envelope,
    now_ms: u64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO outbox (id, workspace, session, event, envelope, state, next_attempt_at,
                             created_at)
         VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)",
    )
    .bind(&event.id)
    .bind(event.workspace.as_str())
    .bind(event.session.as_str())
    .bind(&event.event)
    .bind(event.to_json())
    .bind(db_ms(now_ms))
    .bind(db_ms(now_ms))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

// === impl Store ===

impl Store {
    /// Appends an event whose state change lives elsewhere (session status, QR, inbound message).
    pub async fn record_event(&self, event: &Envelope, now_ms: u64) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        insert(&mut tx, event, now_ms).await?;
        tx.commit().await?;
        self.notify_outbox();
        Ok(())
    }

    /// One event by id.
    pub async fn event(&self, id: &str) -> Result<Option<OutboxEvent>, StoreError> {
        let sql = format!("SELECT {COLUMNS_O} FROM outbox o WHERE id = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row_prefixed).transpose()
    }

    /// Events not yet delivered, dead or skipped (the `wafleet_webhook_backlog` gauge).
    pub async fn outbox_backlog(&self) -> Result<u64, StoreError> {
        // Unexpanded events plus pending per-target deliveries.
        let n: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM outbox WHERE fanned = 0)
                  + (SELECT COUNT(*) FROM deliveries WHERE state = 'pending')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(ms(n))
    }

    /// Events of a session in commit order after the event `after` (the SSE `Last-Event-ID`;
    /// `None`: from the start), at most `limit`. See [`Store::resume_seq`].
    pub async fn events_after(
        &self,
        ws: &WorkspaceId,
        s: &SessionId,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        let after_seq = match after {
            Some(_) => self.resume_seq(ws, s, after).await?,
            None => 0,
        };
        self.events_after_seq(ws, s, after_seq, limit).await
    }

    /// Where a stream resumes: the sequence of event `last_event_id`; for an id no longer stored
    /// (purged), the last event of the session whose id sorts before it (ULIDs follow time);
    /// for `None`, the session's latest event (only new events follow).
    pub async fn resume_seq(
        &self,
        ws: &WorkspaceId,
        s: &SessionId,
        last_event_id: Option<&str>,
    ) -> Result<i64, StoreError> {
        let Some(id) = last_event_id else {
            return self.last_event_seq(ws, s).await;
        };
        if let Some(seq) = self.seq_of(id).await? {
            return Ok(seq);
        }
        let seq: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(seq) FROM outbox WHERE workspace = ? AND session = ? AND id <= ?",
        )
        .bind(ws.as_str())
        .bind(s.as_str())
        .bind(id)
        .fetch_one(&self.pool)
        .await?;
        Ok(seq.unwrap_or(0))
    }

    /// Events of a session with `seq > after_seq`, in order, at most `limit`.
    pub async fn events_after_seq(
        &self,
        ws: &WorkspaceId,
        s: &SessionId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS_O} FROM outbox o WHERE workspace = ? AND session = ? AND seq > ?
             ORDER BY seq LIMIT ?"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ws.as_str())
            .bind(s.as_str())
            .bind(after_seq)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row_prefixed).collect()
    }

    /// The highest outbox sequence of a session (0 if none): where a fresh stream starts when the
    /// client wants only new events.
    pub async fn last_event_seq(&self, ws: &WorkspaceId, s: &SessionId) -> Result<i64, StoreError> {
        let seq: Option<i64> =
            sqlx::query_scalar("SELECT MAX(seq) FROM outbox WHERE workspace = ? AND session = ?")
                .bind(ws.as_str())
                .bind(s.as_str())
                .fetch_one(&self.pool)
                .await?;
        Ok(seq.unwrap_or(0))
    }

    /// Deletes delivered and skipped events created before `before_ms` (retention; the SSE resume
    /// window). Pending events and dead letters are kept.
    pub async fn purge_outbox(&self, before_ms: u64) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "DELETE FROM outbox WHERE state IN ('delivered', 'skipped') AND created_at < ?",
        )
        .bind(db_ms(before_ms))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    pub(super) async fn seq_of(&self, id: &str) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar("SELECT seq FROM outbox WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }
}

/// A session's last recorded status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionState {
    /// Workspace.
    pub workspace: WorkspaceId,
    /// Session.
    pub session: SessionId,
    /// `STOPPED`, `STARTING`, `SCAN_QR_CODE`, `WORKING` or `FAILED`.
    pub status: String,
    /// Unix ms.
    pub updated_at: u64,
}

// === impl Store (session states) ===

impl Store {
    /// Records a session's new status and, in the same transaction, its `session.status` event
    /// (if given). Returns the previous status, if any.
    pub async fn set_session_status(
        &self,
        ws: &WorkspaceId,
        s: &SessionId,
        status: &str,
        event: Option<&Envelope>,
        now_ms: u64,
    ) -> Result<Option<String>, StoreError> {
        let mut tx = self.begin_write().await?;
        let previous: Option<String> = sqlx::query_scalar(
            "SELECT status FROM session_states WHERE workspace = ? AND session = ?",
        )
        .bind(ws.as_str())
        .bind(s.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO session_states (workspace, session, status, updated_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (workspace, session) DO UPDATE SET status = excluded.status,
                                                            updated_at = excluded.updated_at",
        )
        .bind(ws.as_str())
        .bind(s.as_str())
        .bind(status)
        .bind(db_ms(now_ms))
        .execute(&mut *tx)
        .await?;
        if let Some(event) = event {
            insert(&mut tx, event, now_ms).await?;
        }
        tx.commit().await?;
        if event.is_some() {
            self.notify_outbox();
        }
        Ok(previous)
    }

    /// Every recorded session status (for restores after a restart), by workspace and session.
    pub async fn session_states(&self) -> Result<Vec<SessionState>, StoreError> {
        let rows = sqlx::query(
            "SELECT workspace, session, status, updated_at FROM session_states
             ORDER BY workspace, session",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let ws: String = r.try_get("workspace")?;
                let s: String = r.try_get("session")?;
                Ok(SessionState {
                    workspace: WorkspaceId::new(ws)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    session: SessionId::new(s).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    status: r.try_get("status")?,
                    updated_at: ms(r.try_get("updated_at")?),
                })
            })
            .collect()
    }

    /// Forgets a session's status (on delete). Its events stay until retention removes them.
    pub async fn forget_session_state(
        &self,
        ws: &WorkspaceId,
        s: &SessionId,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM session_states WHERE workspace = ? AND session = ?")
            .bind(ws.as_str())
            .bind(s.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
