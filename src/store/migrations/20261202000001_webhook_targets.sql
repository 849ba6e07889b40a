-- Per-target webhook delivery (issue 12): a session has up to 5 webhook targets and each event
-- is delivered to each matching target independently (own attempts, own dead letter).
--
-- The outbox row stays the event (SSE reads it); `fanned` says the delivery task has expanded
-- it into one `deliveries` row per matching target (0: not yet). The outbox row's own state
-- becomes the summary of its deliveries: pending while any is pending, else dead if any is
-- dead, else delivered if any was delivered, else skipped.
ALTER TABLE outbox ADD COLUMN fanned INTEGER NOT NULL DEFAULT 0;

-- One event to one target. target is the session's target id; '' is "the session's first
-- target" (rows carried over from the single-webhook schema, resolved when delivered).
-- state: pending, delivered, dead (dead letter), dropped (the target was removed by a PATCH or
-- no longer wants the event).
CREATE TABLE deliveries (
    seq              INTEGER NOT NULL REFERENCES outbox (seq) ON DELETE CASCADE,
    target           TEXT    NOT NULL,
    workspace        TEXT    NOT NULL,
    session          TEXT    NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN ('pending', 'delivered', 'dead', 'dropped')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    delivered_at     INTEGER,
    dead_at          INTEGER,
    last_status      INTEGER,
    last_error       TEXT,
    PRIMARY KEY (seq, target)
);
CREATE INDEX deliveries_pending ON deliveries (workspace, session, target, seq)
    WHERE state = 'pending';
CREATE INDEX deliveries_dead ON deliveries (workspace, seq) WHERE state = 'dead';
CREATE INDEX deliveries_workspace ON deliveries (workspace);

-- Pending events and dead letters of the old schema: a delivery to the session's first target
-- each, keeping their attempts and schedule. Every existing row counts as expanded.
INSERT INTO deliveries (seq, target, workspace, session, state, attempts, next_attempt_at,
                        delivered_at, dead_at, last_status, last_error)
    SELECT seq, '', workspace, session, state, attempts, next_attempt_at, delivered_at, dead_at,
           last_status, last_error
    FROM outbox WHERE state IN ('pending', 'dead');
UPDATE outbox SET fanned = 1;
CREATE INDEX outbox_unfanned ON outbox (seq) WHERE fanned = 0;
