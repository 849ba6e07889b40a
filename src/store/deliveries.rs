//! Per-target webhook deliveries (issue 12): each outbox event goes to each of its session's
//! matching targets independently.
//!
//! The delivery task first *expands* an event ([`Store::outbox_unfanned`],
//! [`Store::outbox_fan_out`]): one `deliveries` row per target that wants it, chosen from the
//! session's targets at that moment (a target added later gets the events from then on). Then,
//! per (session, target), only the oldest pending delivery (the head) is attempted, which keeps
//! the order per target while a failing receiver holds back only itself. Each outcome updates
//! the event's summary state in the same transaction (pending while any delivery is pending,
//! else dead if any is dead, else delivered if any was, else skipped), so the outbox row keeps
//! meaning what it meant with one webhook. Dead letters are deliveries in state `dead`.

use serde_json::{Value, json};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::outbox::{COLUMNS_O, from_row_prefixed};
use super::{Store, StoreError, db_ms, ms};
use crate::ids::{SessionId, WorkspaceId};
use crate::store::OutboxEvent;

/// The target id of deliveries carried over from the single-webhook schema: "the session's
/// first target", resolved when delivered.
pub const FIRST_TARGET: &str = "";

/// The state of one event's delivery to one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    /// Waiting for (another) attempt.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// A dead letter: listable and replayable.
    Dead,
    /// The target was removed (or stopped wanting the event) before it was delivered.
    Dropped,
}

impl DeliveryState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
            DeliveryState::Dropped => "dropped",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "pending" => DeliveryState::Pending,
            "delivered" => DeliveryState::Delivered,
            "dead" => DeliveryState::Dead,
            "dropped" => DeliveryState::Dropped,
            other => return Err(StoreError::Corrupt(format!("delivery state {other:?}"))),
        })
    }
}

/// One event's delivery to one target.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The event (its own `state` is the summary over all its targets).
    pub event: OutboxEvent,
    /// The target id ([`FIRST_TARGET`] for rows of the old schema).
    pub target: String,
    /// This delivery's state.
    pub state: DeliveryState,
    /// Attempts made to this target.
    pub attempts: u32,
    /// Next attempt not before (Unix ms).
    pub next_attempt_at: u64,
    /// Unix ms.
    pub delivered_at: Option<u64>,
    /// Unix ms.
    pub dead_at: Option<u64>,
    /// HTTP status of the last attempt, if one was received.
    pub last_status: Option<u16>,
    /// What went wrong on the last attempt.
    pub last_error: Option<String>,
}

impl Delivery {
    /// The dead-letter view the API lists: `{"id","event","workspace","session","target",
    /// "state","attempts","last_status","last_error","created_at","dead_at","envelope"}`;
    /// `target` is `null` for a dead letter of the single-webhook schema.
    pub fn to_api_json(&self) -> Value {
        let envelope: Value = serde_json::from_str(&self.event.envelope)
            .unwrap_or(Value::String(self.event.envelope.clone()));
        json!({
            "id": self.event.id,
            "event": self.event.event,
            "workspace": self.event.workspace,
            "session": self.event.session,
            "target": (self.target != FIRST_TARGET).then_some(&self.target),
            "state": self.state.as_str(),
            "attempts": self.attempts,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "created_at": self.event.created_at,
            "dead_at": self.dead_at,
            "envelope": envelope,
        })
    }
}

const COLUMNS_D: &str = "d.target AS d_target, d.state AS d_state, d.attempts AS d_attempts,
    d.next_attempt_at AS d_next_attempt_at, d.delivered_at AS d_delivered_at,
    d.dead_at AS d_dead_at, d.last_status AS d_last_status, d.last_error AS d_last_error";

fn delivery_from_row(row: &SqliteRow) -> Result<Delivery, StoreError> {
    let state: String = row.try_get("d_state")?;
    let attempts: i64 = row.try_get("d_attempts")?;
    let delivered: Option<i64> = row.try_get("d_delivered_at")?;
    let dead: Option<i64> = row.try_get("d_dead_at")?;
    let status: Option<i64> = row.try_get("d_last_status")?;
    Ok(Delivery {
        event: from_row_prefixed(row)?,
        target: row.try_get("d_target")?,
        state: DeliveryState::parse(&state)?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        next_attempt_at: ms(row.try_get("d_next_attempt_at")?),
        delivered_at: delivered.map(ms),
        dead_at: dead.map(ms),
        last_status: status.and_then(|s| u16::try_from(s).ok()),
        last_error: row.try_get("d_last_error")?,
    })
}

/// Recomputes an event's summary state from its deliveries (see the module doc).
async fn summarize(conn: &mut sqlx::SqliteConnection, seq: i64) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE outbox SET
             state = CASE
                 WHEN EXISTS (SELECT 1 FROM deliveries d WHERE d.seq = outbox.seq
                              AND d.state = 'pending') THEN 'pending'
                 WHEN EXISTS (SELECT 1 FROM deliveries d WHERE d.seq = outbox.seq
                              AND d.state = 'dead') THEN 'dead'
                 WHEN EXISTS (SELECT 1 FROM deliveries d WHERE d.seq = outbox.seq
                              AND d.state = 'delivered') THEN 'delivered'
                 ELSE 'skipped' END,
             attempts = (SELECT COALESCE(MAX(d.attempts), 0) FROM deliveries d
                         WHERE d.seq = outbox.seq),
             delivered_at = (SELECT MAX(d.delivered_at) FROM deliveries d
                             WHERE d.seq = outbox.seq),
             dead_at = (SELECT MAX(d.dead_at) FROM deliveries d WHERE d.seq = outbox.seq)
         WHERE seq = ? AND fanned = 1",
    )
    .bind(seq)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

// === impl Store ===

impl Store {
    /// Events not expanded into deliveries yet, oldest first, at most `limit`.
    pub async fn outbox_unfanned(&self, limit: u32) -> Result<Vec<OutboxEvent>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS_O} FROM outbox o WHERE o.fanned = 0 ORDER BY o.seq LIMIT ?");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row_prefixed).collect()
    }

    /// Expands event `id` into one pending delivery per target (due now); with no targets the
    /// event is skipped. Expanding twice is a no-op.
    pub async fn outbox_fan_out(
        &self,
        id: &str,
        targets: &[String],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let row: Option<(i64, String, String)> = sqlx::query_as(
            "SELECT seq, workspace, session FROM outbox WHERE id = ? AND fanned = 0",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((seq, ws, s)) = row else {
            return Ok(());
        };
        for t in targets {
            sqlx::query(
                "INSERT OR IGNORE INTO deliveries (seq, target, workspace, session, state,
                                                   next_attempt_at)
                 VALUES (?, ?, ?, ?, 'pending', ?)",
            )
            .bind(seq)
            .bind(t)
            .bind(&ws)
            .bind(&s)
            .bind(db_ms(now_ms))
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE outbox SET fanned = 1 WHERE seq = ?")
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        summarize(&mut tx, seq).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Skips every unexpanded event of a session in one statement (it has no target at all).
    pub async fn outbox_skip_session(
        &self,
        ws: &WorkspaceId,
        s: &SessionId,
    ) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE outbox SET state = 'skipped', fanned = 1
             WHERE workspace = ? AND session = ? AND fanned = 0",
        )
        .bind(ws.as_str())
        .bind(s.as_str())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// The pending head delivery of every (session, target) (its oldest pending), whatever its
    /// due time, oldest first, at most `limit`. The caller attempts those due and sleeps until
    /// the earliest `next_attempt_at` of the others.
    pub async fn delivery_heads(&self, limit: u32) -> Result<Vec<Delivery>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS_O}, {COLUMNS_D} FROM deliveries d JOIN outbox o ON o.seq = d.seq
             WHERE (d.seq, d.target) IN (
                 SELECT MIN(seq), target FROM deliveries WHERE state = 'pending'
                 GROUP BY workspace, session, target)
             ORDER BY d.seq, d.target LIMIT ?"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(delivery_from_row).collect()
    }

    /// One event's delivery to one target.
    pub async fn delivery(&self, id: &str, target: &str) -> Result<Option<Delivery>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS_O}, {COLUMNS_D} FROM deliveries d JOIN outbox o ON o.seq = d.seq
             WHERE o.id = ? AND d.target = ?"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(target)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(delivery_from_row).transpose()
    }

    /// Every delivery of one event, by target.
    pub async fn deliveries_of(&self, id: &str) -> Result<Vec<Delivery>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS_O}, {COLUMNS_D} FROM deliveries d JOIN outbox o ON o.seq = d.seq
             WHERE o.id = ? ORDER BY d.target"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(delivery_from_row).collect()
    }

    /// Runs one pending-delivery update and the event's summary in one transaction.
    async fn update_delivery(
        &self,
        sql: &'static str,
        id: &str,
        target: &str,
        bind: impl FnOnce(
            sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
        )
            -> sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let seq: Option<i64> = sqlx::query_scalar("SELECT seq FROM outbox WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(seq) = seq else { return Ok(()) };
        bind(sqlx::query(sql))
            .bind(seq)
            .bind(target)
            .execute(&mut *tx)
            .await?;
        summarize(&mut tx, seq).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records a 2xx answer of `target` for event `id`.
    pub async fn delivery_delivered(
        &self,
        id: &str,
        target: &str,
        status: u16,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.update_delivery(
            "UPDATE deliveries SET state = 'delivered', attempts = attempts + 1,
                    delivered_at = ?, last_status = ?, last_error = NULL
             WHERE seq = ? AND target = ? AND state = 'pending'",
            id,
            target,
            |q| q.bind(db_ms(now_ms)).bind(i64::from(status)),
        )
        .await
    }

    /// Records a failed attempt that will be retried at `next_attempt_at`.
    pub async fn delivery_retry(
        &self,
        id: &str,
        target: &str,
        status: Option<u16>,
        error: &str,
        next_attempt_at: u64,
    ) -> Result<(), StoreError> {
        let error = error.to_owned();
        self.update_delivery(
            "UPDATE deliveries SET attempts = attempts + 1, next_attempt_at = ?,
                    last_status = ?, last_error = ?
             WHERE seq = ? AND target = ? AND state = 'pending'",
            id,
            target,
            move |q| {
                q.bind(db_ms(next_attempt_at))
                    .bind(status.map(i64::from))
                    .bind(error)
            },
        )
        .await
    }

    /// Makes a delivery a dead letter after a final failed attempt.
    pub async fn delivery_dead(
        &self,
        id: &str,
        target: &str,
        status: Option<u16>,
        error: &str,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let error = error.to_owned();
        self.update_delivery(
            "UPDATE deliveries SET state = 'dead', attempts = attempts + 1, dead_at = ?,
                    last_status = ?, last_error = ?
             WHERE seq = ? AND target = ? AND state = 'pending'",
            id,
            target,
            move |q| {
                q.bind(db_ms(now_ms))
                    .bind(status.map(i64::from))
                    .bind(error)
            },
        )
        .await
    }

    /// Drops a pending delivery whose target is gone (removed by a PATCH) or no longer wants
    /// the event.
    pub async fn delivery_dropped(&self, id: &str, target: &str) -> Result<(), StoreError> {
        self.update_delivery(
            "UPDATE deliveries SET state = 'dropped'
             WHERE seq = ? AND target = ? AND state = 'pending'",
            id,
            target,
            |q| q,
        )
        .await
    }

    /// Dead letters of a workspace (optionally one session), oldest first, after the event
    /// `after` (an event id, for paging), at most `limit`. An event dead at two targets is two
    /// dead letters, next to each other.
    pub async fn dead_letters(
        &self,
        ws: &WorkspaceId,
        session: Option<&SessionId>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        let after_seq = match after {
            Some(id) => self.seq_of(id).await?.ok_or(StoreError::NotFound)?,
            None => 0,
        };
        let sql = format!(
            "SELECT {COLUMNS_O}, {COLUMNS_D} FROM deliveries d JOIN outbox o ON o.seq = d.seq
             WHERE d.state = 'dead' AND d.workspace = ? AND (? IS NULL OR d.session = ?)
                   AND d.seq > ?
             ORDER BY d.seq, d.target LIMIT ?"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ws.as_str())
            .bind(session.map(|s| s.as_str()))
            .bind(session.map(|s| s.as_str()))
            .bind(after_seq)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(delivery_from_row).collect()
    }

    /// Re-arms the dead deliveries of event `id` of workspace `ws` (only the one to `target`
    /// when given): pending again, attempts reset, due now. They keep their place in their
    /// target's sequence, so they go before that target's newer pending deliveries.
    /// `Err(NotFound)` if there is no such dead letter.
    pub async fn replay_dead(
        &self,
        ws: &WorkspaceId,
        id: &str,
        target: Option<&str>,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let seq: Option<i64> =
            sqlx::query_scalar("SELECT seq FROM outbox WHERE id = ? AND workspace = ?")
                .bind(id)
                .bind(ws.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let Some(seq) = seq else {
            return Err(StoreError::NotFound);
        };
        let r = sqlx::query(
            "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?,
                    dead_at = NULL
             WHERE seq = ? AND state = 'dead' AND (? IS NULL OR target = ?)",
        )
        .bind(db_ms(now_ms))
        .bind(seq)
        .bind(target)
        .bind(target)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        summarize(&mut tx, seq).await?;
        tx.commit().await?;
        self.notify_outbox();
        Ok(())
    }
}
