-- The node's place in the tree: its children, redeemed join tokens, and the
-- revocations it has seen.
CREATE TABLE children (
    peer_id   TEXT PRIMARY KEY,
    role      TEXT NOT NULL,
    site      TEXT NOT NULL,
    groups    TEXT NOT NULL DEFAULT '[]',   -- JSON array
    addrs     TEXT NOT NULL DEFAULT '[]',   -- JSON array
    last_seen INTEGER NOT NULL DEFAULT 0,   -- unix seconds
    revoked   INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE used_tokens (
    nonce      BLOB PRIMARY KEY,
    peer_id    TEXT NOT NULL,
    used_at    INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE TABLE revocations (
    body    BLOB PRIMARY KEY,   -- the signed record's canonical body
    sig     BLOB NOT NULL,
    target  TEXT NOT NULL,
    revoker TEXT NOT NULL,
    at      INTEGER NOT NULL
);
