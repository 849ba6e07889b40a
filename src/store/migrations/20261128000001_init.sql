-- wafleet shard store, first schema. Times are Unix milliseconds (INTEGER).
-- The file lives on NFS: the store opens it with journal_mode=DELETE (no WAL) and one writer.

-- Idempotency-Key records: the first response to a (workspace, key) is replayed for the same
-- request body and refused (422) for a different one, until it expires.
CREATE TABLE idempotency_keys (
    workspace     TEXT    NOT NULL,
    idem_key      TEXT    NOT NULL,
    request_hash  TEXT    NOT NULL,
    status        INTEGER NOT NULL,
    body          BLOB    NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    PRIMARY KEY (workspace, idem_key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);

-- The message log: every outgoing message and its delivery status.
CREATE TABLE messages (
    id          TEXT    PRIMARY KEY,
    workspace   TEXT    NOT NULL,
    session     TEXT    NOT NULL,
    recipient   TEXT    NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('text', 'media')),
    body        TEXT    NOT NULL,
    status      TEXT    NOT NULL CHECK (status IN ('queued', 'sent', 'server', 'device', 'read', 'failed')),
    reason      TEXT,
    wa_id       TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    sent_at     INTEGER
);
CREATE INDEX messages_session ON messages (workspace, session, created_at);
CREATE INDEX messages_wa_id ON messages (workspace, session, wa_id);

-- The send queue: one row per message not yet handed to WhatsApp. FIFO per session by seq.
-- claimed_at is set while the engine is sending it (see Store::recover_interrupted_sends).
CREATE TABLE send_queue (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id  TEXT    NOT NULL UNIQUE REFERENCES messages (id),
    workspace   TEXT    NOT NULL,
    session     TEXT    NOT NULL,
    not_before  INTEGER NOT NULL DEFAULT 0,
    claimed_at  INTEGER
);
CREATE INDEX send_queue_session ON send_queue (workspace, session, seq);

-- The webhook / event outbox, written in the same transaction as the state change it reports.
-- seq orders events (per session); id is the public event id evt_<ulid>.
-- state: pending (to deliver), delivered, dead (dead letter), skipped (no webhook wanted it).
CREATE TABLE outbox (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT    NOT NULL UNIQUE,
    workspace        TEXT    NOT NULL,
    session          TEXT    NOT NULL,
    event            TEXT    NOT NULL,
    envelope         TEXT    NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN ('pending', 'delivered', 'dead', 'skipped')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    delivered_at     INTEGER,
    dead_at          INTEGER,
    last_status      INTEGER,
    last_error       TEXT
);
CREATE INDEX outbox_pending ON outbox (workspace, session, seq) WHERE state = 'pending';
CREATE INDEX outbox_session ON outbox (workspace, session, seq);
CREATE INDEX outbox_dead ON outbox (workspace, seq) WHERE state = 'dead';

-- The last known status of each session, changed together with its session.status event.
CREATE TABLE session_states (
    workspace   TEXT    NOT NULL,
    session     TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (workspace, session)
);
