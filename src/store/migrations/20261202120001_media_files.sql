-- Inbound media kept by this shard (src/worker/media, docs/worker.md "Inbound media storage"):
-- one row per message whose file was downloaded. Files are content-addressed per session, so
-- two messages with the same bytes share one stored object (key workspace/session/sha256); an
-- object is deleted when its last row goes. Times are Unix milliseconds.
CREATE TABLE media_files (
    workspace   TEXT    NOT NULL,
    session     TEXT    NOT NULL,
    wa_id       TEXT    NOT NULL,
    sha256      TEXT    NOT NULL,
    size        INTEGER NOT NULL,
    mimetype    TEXT,
    filename    TEXT,
    stored_at   INTEGER NOT NULL,
    PRIMARY KEY (workspace, session, wa_id)
);
CREATE INDEX media_files_age ON media_files (stored_at);
CREATE INDEX media_files_object ON media_files (workspace, session, sha256);
