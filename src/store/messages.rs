//! The message log and the per-session send queue.
//!
//! A message is written with status `queued` together with its queue row (and, if the request
//! carried one, its idempotency record) in one transaction. The queue is FIFO per session by an
//! autoincrement sequence and survives restarts. Status changes are monotonic
//! (`queued → sent → server → device → read`, or `failed` before `server`) and append their outbox
//! event in the same transaction.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::idempotency::{self, IdempotencyKey, StoredResponse};
use super::{Store, StoreError, db_ms, ms, outbox};
use crate::ids::{SessionId, WorkspaceId};
use crate::webhook::Envelope;

/// What a message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageKind {
    /// A text message.
    Text,
    /// A media message (image, document, …).
    Media,
}

impl MessageKind {
    /// The stored and serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Text => "text",
            MessageKind::Media => "media",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "text" => Ok(MessageKind::Text),
            "media" => Ok(MessageKind::Media),
            other => Err(StoreError::Corrupt(format!("message kind {other:?}"))),
        }
    }
}

/// The status of an outgoing message (DESIGN §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    /// Accepted and waiting in the session's send queue.
    Queued,
    /// Handed to WhatsApp Web (ack 0, pending).
    Sent,
    /// Acknowledged by the WhatsApp server (ack 1).
    Server,
    /// Delivered to the recipient's device (ack 2).
    Device,
    /// Read (ack 3) or played (ack 4).
    Read,
    /// Could not be sent; see the reason.
    Failed,
}

impl MessageStatus {
    /// The stored and serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Queued => "queued",
            MessageStatus::Sent => "sent",
            MessageStatus::Server => "server",
            MessageStatus::Device => "device",
            MessageStatus::Read => "read",
            MessageStatus::Failed => "failed",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => MessageStatus::Queued,
            "sent" => MessageStatus::Sent,
            "server" => MessageStatus::Server,
            "device" => MessageStatus::Device,
            "read" => MessageStatus::Read,
            "failed" => MessageStatus::Failed,
            _ => return None,
        })
    }

    /// The status for a WhatsApp Web ack value (`-1` error, `0` pending, `1` server, `2` device,
    /// `3` read, `4` played).
    pub fn from_ack(ack: i64) -> Option<Self> {
        Some(match ack {
            -1 => MessageStatus::Failed,
            0 => MessageStatus::Sent,
            1 => MessageStatus::Server,
            2 => MessageStatus::Device,
            3 | 4 => MessageStatus::Read,
            _ => return None,
        })
    }

    /// The WhatsApp ack value of this status (`queued` has none).
    pub fn ack(self) -> Option<i64> {
        match self {
            MessageStatus::Queued => None,
            MessageStatus::Sent => Some(0),
            MessageStatus::Server => Some(1),
            MessageStatus::Device => Some(2),
            MessageStatus::Read => Some(3),
            MessageStatus::Failed => Some(-1),
        }
    }

    /// PURE. Whether a message in `self` may move to `to`. Acks only move forward (they can arrive
    /// out of order and twice); `failed` is possible until the server has acknowledged; `read`
    /// and `failed` are final.
    pub fn can_move_to(self, to: MessageStatus) -> bool {
        use MessageStatus::*;
        match (self, to) {
            (Failed, _) | (Read, _) => false,
            (Queued | Sent, Failed) => true,
            (_, Failed) | (_, Queued) => false,
            (from, to) => to > from,
        }
    }
}

/// A message to enqueue. `id` is chosen by the caller (e.g. `msg_<ulid>`) so the API response
/// can be built, and stored under an idempotency key, before the insert.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The public message id.
    pub id: String,
    /// Workspace.
    pub workspace: WorkspaceId,
    /// Session that sends it.
    pub session: SessionId,
    /// Recipient (phone digits or a chat id), validated by the API.
    pub to: String,
    /// Text or media.
    pub kind: MessageKind,
    /// The request body to hand to the engine (text, media reference, options).
    pub body: Value,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    /// The public message id.
    pub id: String,
    /// Workspace.
    pub workspace: WorkspaceId,
    /// Session.
    pub session: SessionId,
    /// Recipient.
    pub to: String,
    /// Text or media.
    pub kind: MessageKind,
    /// The request body.
    pub body: Value,
    /// Current status.
    pub status: MessageStatus,
    /// Why it failed, when it did.
    pub reason: Option<String>,
    /// WhatsApp's message id once sent.
    pub wa_id: Option<String>,
    /// Send attempts made.
    pub attempts: u32,
    /// Unix ms.
    pub created_at: u64,
    /// Unix ms.
    pub updated_at: u64,
    /// Unix ms when handed to WhatsApp.
    pub sent_at: Option<u64>,
}

/// A message at the head of a send queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedMessage {
    /// Queue sequence (FIFO order).
    pub seq: i64,
    /// Not to be tried before this time (Unix ms), after a transient failure.
    pub not_before: u64,
    /// Set while a send is in flight.
    pub claimed_at: Option<u64>,
    /// The message.
    pub message: Message,
}

/// Everything [`Store::enqueue_message`] writes in one transaction.
#[derive(Debug, Clone)]
pub struct EnqueueRequest<'a> {
    /// The message.
    pub message: &'a NewMessage,
    /// The request's idempotency key, if any, and the response to keep under it.
    pub idempotency: Option<(&'a IdempotencyKey, &'a StoredResponse)>,
    /// Refuse with [`StoreError::QueueFull`] when the session already has this many queued.
    pub queue_cap: u64,
    /// An event to append in the same transaction (none is defined for `queued` today).
    pub event: Option<&'a Envelope>,
    /// Unix ms.
    pub now_ms: u64,
}

/// The result of [`Store::enqueue_message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// Queued; `queue_len` counts it.
    Queued {
        /// Messages in the session's queue, this one included.
        queue_len: u64,
    },
    /// The idempotency key was seen with the same request: nothing written, answer with this.
    Replay(StoredResponse),
}

fn message_from_row(row: &SqliteRow) -> Result<Message, StoreError> {
    let ws: String = row.try_get("workspace")?;
    let s: String = row.try_get("session")?;
    let body: String = row.try_get("body")?;
    let status: String = row.try_get("status")?;
    let kind: String = row.try_get("kind")?;
    let sent_at: Option<i64> = row.try_get("sent_at")?;
    let attempts: i64 = row.try_get("attempts")?;
    Ok(Message {
        id: row.try_get("id")?,
        workspace: WorkspaceId::new(ws).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        session: SessionId::new(s).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        to: row.try_get("recipient")?,
        kind: MessageKind::parse(&kind)?,
        body: serde_json::from_str(&body).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        status: MessageStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("status {status:?}")))?,
        reason: row.try_get("reason")?,
        wa_id: row.try_get("wa_id")?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        created_at: ms(row.try_get("created_at")?),
        updated_at: ms(row.try_get("updated_at")?),
        sent_at: sent_at.map(ms),
    })
}

const MESSAGE_COLUMNS: &str = "m.id, m.workspace, m.session, m.recipient, m.kind, m.body, m.status,
    m.reason, m.wa_id, m.attempts, m.created_at, m.updated_at, m.sent_at";

async fn queue_len_in(
    conn: &mut sqlx::SqliteConnection,
    ws: &WorkspaceId,
    s: &SessionId,
) -> Result<u64, StoreError> {
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM send_queue WHERE workspace = ? AND session = ?")
            .bind(ws.as_str())
            .bind(s.as_str())
            .fetch_one(&mut *conn)
            .await?;
    Ok(ms(n))
}

async fn message_in(
    conn: &mut sqlx::SqliteConnection,
    id: &str,
) -> Result<Option<Message>, StoreError> {
    let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.id = ?");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(message_from_row).transpose()
}

// === impl Store ===

impl Store {
    /// Queues a message: checks the idempotency key (replay or conflict), the session's queue
    /// cap, then writes the message, its queue row, the idempotency record and the optional
    /// event in ONE transaction.
    pub async fn enqueue_message(&self, req: EnqueueRequest<'_>) -> Result<Enqueued, StoreError> {
        let m = req.message;
        let mut tx = self.begin_write().await?;
        if let Some((key, _)) = req.idempotency
            && let Some(stored) = idempotency::lookup(&mut tx, key, req.now_ms).await?
        {
            return Ok(Enqueued::Replay(stored));
        }
        let len = queue_len_in(&mut tx, &m.workspace, &m.session).await?;
        if len >= req.queue_cap {
            return Err(StoreError::QueueFull {
                len,
                cap: req.queue_cap,
            });
        }
        sqlx::query(
            "INSERT INTO messages (id, workspace, session, recipient, kind, body, status,
                                   created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
        )
        .bind(&m.id)
        .bind(m.workspace.as_str())
        .bind(m.session.as_str())
        .bind(&m.to)
        .bind(m.kind.as_str())
        .bind(m.body.to_string())
        .bind(db_ms(req.now_ms))
        .bind(db_ms(req.now_ms))
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO send_queue (message_id, workspace, session) VALUES (?, ?, ?)")
            .bind(&m.id)
            .bind(m.workspace.as_str())
            .bind(m.session.as_str())
            .execute(&mut *tx)
            .await?;
        if let Some((key, response)) = req.idempotency {
            idempotency::insert(&mut tx, key, response, req.now_ms).await?;
        }
        if let Some(event) = req.event {
            outbox::insert(&mut tx, event, req.now_ms).await?;
        }
        tx.commit().await?;
        self.notify_queue();
        if req.event.is_some() {
            self.notify_outbox();
        }
        Ok(Enqueued::Queued { queue_len: len + 1 })
    }

    /// One message by id.
    pub async fn message(&self, id: &str) -> Result<Option<Message>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        message_in(&mut conn, id).await
    }

    /// Moves message `id` to `to` if [`MessageStatus::can_move_to`] allows it, and in the same
    /// transaction appends the event `make_event` builds from the updated message (if any). A
    /// move to `sent` or `failed` also removes the message from its send queue. Returns the
    /// updated message, or `None` when the transition was not allowed (nothing written: a late or
    /// duplicate ack). `Err(NotFound)` if there is no such message.
    pub async fn update_message_status(
        &self,
        id: &str,
        to: MessageStatus,
        reason: Option<&str>,
        wa_id: Option<&str>,
        now_ms: u64,
        make_event: impl FnOnce(&Message) -> Option<Envelope>,
    ) -> Result<Option<Message>, StoreError> {
        let mut tx = self.begin_write().await?;
        let Some(current) = message_in(&mut tx, id).await? else {
            return Err(StoreError::NotFound);
        };
        if !current.status.can_move_to(to) {
            return Ok(None);
        }
        sqlx::query(
            "UPDATE messages SET status = ?, updated_at = ?,
                    reason = COALESCE(?, reason), wa_id = COALESCE(?, wa_id),
                    sent_at = CASE WHEN ? = 'sent' THEN ? ELSE sent_at END
             WHERE id = ?",
        )
        .bind(to.as_str())
        .bind(db_ms(now_ms))
        .bind(reason)
        .bind(wa_id)
        .bind(to.as_str())
        .bind(db_ms(now_ms))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if matches!(to, MessageStatus::Sent | MessageStatus::Failed) {
            sqlx::query("DELETE FROM send_queue WHERE message_id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let updated = message_in(&mut tx, id).await?.ok_or(StoreError::NotFound)?;
        let event = make_event(&updated);
        if let Some(event) = &event {
            outbox::insert(&mut tx, event, now_ms).await?;
        }
        tx.commit().await?;
        if event.is_some() {
            self.notify_outbox();
        }
        Ok(Some(updated))
    }

    /// The message of session (`ws`, `s`) that WhatsApp knows as `wa_id`, if any (for acks).
    pub async fn message_by_wa_id(
        &self,
        ws: &WorkspaceId,
        s: &SessionId,
        wa_id: &str,
    ) -> Result<Option<Message>, StoreError> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m
             WHERE m.workspace = ? AND m.session = ? AND m.wa_id = ?"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ws.as_str())
            .bind(s.as_str())
            .bind(wa_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(message_from_row).transpose()
    }

    /// Messages of a session, newest first, at most `limit`.
    pub async fn list_messages(
        &self,
        ws: &WorkspaceId,
        s: &SessionId,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.workspace = ? AND m.session = ?
             ORDER BY m.created_at DESC, m.id DESC LIMIT ?"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ws.as_str())
            .bind(s.as_str())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(message_from_row).collect()
    }

    /// How many messages the session has queued (not yet handed to WhatsApp).
    pub async fn queue_len(&self, ws: &WorkspaceId, s: &SessionId) -> Result<u64, StoreError> {
        let mut conn = self.pool.acquire().await?;
        queue_len_in(&mut conn, ws, s).await
    }

    /// The oldest queued message of the session (FIFO head), if any.
    pub async fn queue_head(
        &self,
        ws: &WorkspaceId,
        s: &SessionId,
    ) -> Result<Option<QueuedMessage>, StoreError> {
        let sql = format!(
            "SELECT q.seq, q.not_before, q.claimed_at, {MESSAGE_COLUMNS}
             FROM send_queue q JOIN messages m ON m.id = q.message_id
             WHERE q.workspace = ? AND q.session = ? ORDER BY q.seq LIMIT 1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ws.as_str())
            .bind(s.as_str())
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let claimed: Option<i64> = row.try_get("claimed_at")?;
        Ok(Some(QueuedMessage {
            seq: row.try_get("seq")?,
            not_before: ms(row.try_get("not_before")?),
            claimed_at: claimed.map(ms),
            message: message_from_row(&row)?,
        }))
    }

    /// Every session that has queued messages.
    pub async fn sessions_with_queue(&self) -> Result<Vec<(WorkspaceId, SessionId)>, StoreError> {
        let rows = sqlx::query(
            "SELECT workspace, session, MIN(seq) AS first FROM send_queue
             GROUP BY workspace, session ORDER BY first",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let ws: String = r.try_get("workspace")?;
                let s: String = r.try_get("session")?;
                Ok((
                    WorkspaceId::new(ws).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    SessionId::new(s).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                ))
            })
            .collect()
    }

    /// Marks the queued message `id` as being sent (one more attempt) before the engine is called.
    pub async fn claim_queued(&self, id: &str, now_ms: u64) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let r = sqlx::query("UPDATE send_queue SET claimed_at = ? WHERE message_id = ?")
            .bind(db_ms(now_ms))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query("UPDATE messages SET attempts = attempts + 1, updated_at = ? WHERE id = ?")
            .bind(db_ms(now_ms))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Returns a claimed message to the head of its queue, not to be retried before `not_before`
    /// (after a transient send error, or a session not ready: then `refund_attempt` undoes the
    /// attempt counted by [`Store::claim_queued`]). Its FIFO position is unchanged.
    pub async fn release_queued(
        &self,
        id: &str,
        not_before_ms: u64,
        refund_attempt: bool,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE send_queue SET claimed_at = NULL, not_before = ? WHERE message_id = ?")
            .bind(db_ms(not_before_ms))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if refund_attempt {
            sqlx::query("UPDATE messages SET attempts = MAX(attempts - 1, 0) WHERE id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Ids of the session's queued messages not being sent right now, in FIFO order.
    pub async fn queued_unclaimed(
        &self,
        ws: &WorkspaceId,
        s: &SessionId,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT message_id FROM send_queue
             WHERE workspace = ? AND session = ? AND claimed_at IS NULL ORDER BY seq",
        )
        .bind(ws.as_str())
        .bind(s.as_str())
        .fetch_all(&self.pool)
        .await?)
    }

    /// Deletes messages no longer queued whose last change is older than `before_ms`
    /// (retention of the message log); returns how many.
    pub async fn purge_messages(&self, before_ms: u64) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "DELETE FROM messages WHERE status <> 'queued' AND updated_at < ?
               AND id NOT IN (SELECT message_id FROM send_queue)",
        )
        .bind(db_ms(before_ms))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Messages whose send was in flight when the process stopped (claimed, never finished).
    /// The dispatcher fails them with reason `interrupted` at start-up rather than resending: a
    /// duplicate WhatsApp message to a contact is worse than a reported failure.
    pub async fn interrupted_sends(&self) -> Result<Vec<String>, StoreError> {
        let ids = sqlx::query_scalar(
            "SELECT message_id FROM send_queue WHERE claimed_at IS NOT NULL ORDER BY seq",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::MessageStatus::*;

    #[test]
    fn transitions_are_monotonic() {
        assert!(Queued.can_move_to(Sent));
        assert!(Queued.can_move_to(Failed));
        assert!(Sent.can_move_to(Server));
        assert!(Sent.can_move_to(Read));
        assert!(Sent.can_move_to(Failed));
        assert!(Server.can_move_to(Device));
        assert!(Device.can_move_to(Read));
        assert!(!Device.can_move_to(Server));
        assert!(!Server.can_move_to(Failed));
        assert!(!Read.can_move_to(Read));
        assert!(!Failed.can_move_to(Sent));
        assert!(!Sent.can_move_to(Queued));
        assert!(!Sent.can_move_to(Sent));
    }

    #[test]
    fn acks_map_to_statuses() {
        for s in [Sent, Server, Device, Read, Failed] {
            assert_eq!(super::MessageStatus::from_ack(s.ack().unwrap()), Some(s));
        }
        assert_eq!(super::MessageStatus::from_ack(4), Some(Read));
        assert_eq!(super::MessageStatus::from_ack(9), None);
    }
}
