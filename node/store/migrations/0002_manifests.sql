-- Job manifests this node holds, in arrival order (local_seq is the sync
-- cursor its children use), and where it is in its parent's list.
CREATE TABLE manifests (
    local_seq   INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      TEXT NOT NULL UNIQUE,
    admin_key   BLOB NOT NULL,
    admin_seq   INTEGER NOT NULL,
    admin_name  TEXT NOT NULL,
    type        TEXT NOT NULL,
    target      TEXT NOT NULL,
    targeted    INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    raw         BLOB NOT NULL,
    UNIQUE (admin_key, admin_seq)
);

CREATE TABLE sync_cursors (
    parent TEXT PRIMARY KEY,
    cursor INTEGER NOT NULL
);
