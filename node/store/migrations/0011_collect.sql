-- What collect jobs gathered: one archive (a package root) per job and
-- destination, as reported up the tree. via is the child the report came
-- through (this node itself for its own): the way down to fetch the blocks.
-- held_at is when every block of it was here and checked (0: not yet).
CREATE TABLE collections (
    job_id      TEXT NOT NULL,
    peer_id     TEXT NOT NULL,
    root        TEXT NOT NULL,
    files       INTEGER NOT NULL,
    bytes       INTEGER NOT NULL,
    skipped     TEXT NOT NULL,     -- JSON array of "path: why"
    via         TEXT NOT NULL,
    reported_at INTEGER NOT NULL,  -- unix milliseconds
    held_at     INTEGER NOT NULL,  -- unix milliseconds; 0: not held here
    fetch_error TEXT NOT NULL,     -- the last fetch's failure, '' if none
    PRIMARY KEY (job_id, peer_id)
);
