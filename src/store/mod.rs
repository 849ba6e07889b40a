//! The shard's SQLite store (sqlx): outbox, idempotency keys, message log.
