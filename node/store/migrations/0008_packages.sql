-- Packages this node knows by name: added here, or (later) fetched.
CREATE TABLE packages (
    cid      TEXT PRIMARY KEY,
    name     TEXT NOT NULL,
    version  TEXT NOT NULL,
    size     INTEGER NOT NULL,  -- the archive's bytes
    stored   INTEGER NOT NULL,  -- the chunks' stored bytes
    chunks   INTEGER NOT NULL,
    added_at INTEGER NOT NULL,  -- unix seconds
    UNIQUE (name, version)
);
