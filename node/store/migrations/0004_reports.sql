-- Reports waiting to go up to the parent: deleted when it acknowledges.
CREATE TABLE outbox (
    pos    INTEGER PRIMARY KEY AUTOINCREMENT,
    id     TEXT NOT NULL UNIQUE,
    origin TEXT NOT NULL,
    kind   TEXT NOT NULL,
    at     INTEGER NOT NULL,   -- unix ms
    body   BLOB NOT NULL
);

-- Every job state transition applied here (this node's and its subtree's):
-- its report id makes applying it twice a no-op.
CREATE TABLE job_events (
    report_id TEXT PRIMARY KEY,
    job_id    TEXT NOT NULL,
    peer_id   TEXT NOT NULL,
    state     TEXT NOT NULL,
    at        INTEGER NOT NULL
);

-- The latest state of each destination of each job, and through which
-- child of this node it was reported (its subtree).
CREATE TABLE job_states (
    job_id    TEXT NOT NULL,
    peer_id   TEXT NOT NULL,
    state     TEXT NOT NULL,
    at        INTEGER NOT NULL,
    reason    TEXT NOT NULL DEFAULT '',
    exit_code INTEGER NOT NULL DEFAULT 0,
    output    TEXT NOT NULL DEFAULT '',
    via       TEXT NOT NULL,
    PRIMARY KEY (job_id, peer_id)
);

-- This node's own runs of the jobs that target it.
CREATE TABLE job_runs (
    job_id  TEXT PRIMARY KEY,
    state   TEXT NOT NULL,
    updated INTEGER NOT NULL
);
