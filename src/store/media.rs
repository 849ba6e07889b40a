//! The index of inbound media this shard keeps (`media_files`): which message's file is stored
//! under which content hash, how big, since when. The bytes live in a media store
//! (`crate::worker::media`); this is the bookkeeping the size cap, the retention and the
//! session deletion work from.

use sqlx::Row;

use super::{Store, StoreError};
use crate::ids::{SessionId, WorkspaceId};

/// One stored file of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRow {
    /// The workspace.
    pub workspace: String,
    /// The session.
    pub session: String,
    /// The message's serialized key.
    pub wa_id: String,
    /// Hex SHA-256 of the file (its object key within the session).
    pub sha256: String,
    /// Bytes.
    pub size: u64,
    /// Mimetype the message named.
    pub mimetype: Option<String>,
    /// File name the message named.
    pub filename: Option<String>,
    /// When it was stored (Unix ms).
    pub stored_at: u64,
}

fn row_of(r: &sqlx::sqlite::SqliteRow) -> Result<MediaRow, sqlx::Error> {
    Ok(MediaRow {
        workspace: r.try_get("workspace")?,
        session: r.try_get("session")?,
        wa_id: r.try_get("wa_id")?,
        sha256: r.try_get("sha256")?,
        size: u64::try_from(r.try_get::<i64, _>("size")?).unwrap_or(0),
        mimetype: r.try_get("mimetype")?,
        filename: r.try_get("filename")?,
        stored_at: u64::try_from(r.try_get::<i64, _>("stored_at")?).unwrap_or(0),
    })
}

/// The columns of a [`MediaRow`], in its order (a macro: sqlx wants static SQL).
macro_rules! columns {
    () => {
        "workspace, session, wa_id, sha256, size, mimetype, filename, stored_at"
    };
}

fn db(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

// === impl Store ===

impl Store {
    /// Records (or replaces) the stored file of a message.
    pub async fn media_put(&self, row: &MediaRow) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(concat!(
            "INSERT OR REPLACE INTO media_files (",
            columns!(),
            ") VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(&row.workspace)
        .bind(&row.session)
        .bind(&row.wa_id)
        .bind(&row.sha256)
        .bind(db(row.size))
        .bind(&row.mimetype)
        .bind(&row.filename)
        .bind(db(row.stored_at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The stored file of a message, if any.
    pub async fn media_get(
        &self,
        ws: &WorkspaceId,
        s: &SessionId,
        wa_id: &str,
    ) -> Result<Option<MediaRow>, StoreError> {
        let r = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM media_files WHERE workspace = ? AND session = ? AND wa_id = ?"
        ))
        .bind(ws.as_str())
        .bind(s.as_str())
        .bind(wa_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(r.as_ref().map(row_of).transpose()?)
    }

    /// Bytes the stored objects take (each object counted once, however many messages share it).
    pub async fn media_total_bytes(&self) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "SELECT COALESCE(SUM(size), 0) AS total FROM \
             (SELECT MAX(size) AS size FROM media_files GROUP BY workspace, session, sha256)",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(r.try_get::<i64, _>("total")?).unwrap_or(0))
    }

    /// The `limit` oldest rows, oldest first.
    pub async fn media_oldest(&self, limit: u32) -> Result<Vec<MediaRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM media_files ORDER BY stored_at, workspace, session, wa_id LIMIT ?"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(row_of).collect::<Result<_, _>>()?)
    }

    /// Rows stored before `cutoff` (Unix ms), at most `limit`, oldest first.
    pub async fn media_older_than(
        &self,
        cutoff: u64,
        limit: u32,
    ) -> Result<Vec<MediaRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM media_files WHERE stored_at < ? ORDER BY stored_at LIMIT ?"
        ))
        .bind(db(cutoff))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(row_of).collect::<Result<_, _>>()?)
    }

    /// Every row of a session.
    pub async fn media_of_session(
        &self,
        ws: &WorkspaceId,
        s: &SessionId,
    ) -> Result<Vec<MediaRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM media_files WHERE workspace = ? AND session = ?"
        ))
        .bind(ws.as_str())
        .bind(s.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(row_of).collect::<Result<_, _>>()?)
    }

    /// Forgets one message's file; answers whether another message still references the same
    /// object (then the object must stay).
    pub async fn media_forget(&self, row: &MediaRow) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM media_files WHERE workspace = ? AND session = ? AND wa_id = ?")
            .bind(&row.workspace)
            .bind(&row.session)
            .bind(&row.wa_id)
            .execute(&mut *tx)
            .await?;
        let left = sqlx::query(
            "SELECT COUNT(*) AS n FROM media_files WHERE workspace = ? AND session = ? AND sha256 = ?",
        )
        .bind(&row.workspace)
        .bind(&row.session)
        .bind(&row.sha256)
        .fetch_one(&mut *tx)
        .await?;
        let n: i64 = left.try_get("n")?;
        tx.commit().await?;
        Ok(n > 0)
    }
}
