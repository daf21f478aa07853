-- Status ingestion writes fewer pages per batch: the latest state of each
-- destination is clustered on its key (one B-tree, not a table and an
-- index), and the history of transitions is appended in arrival order
-- (only transitions that moved a destination's state are kept: a report
-- sent twice is applied once).
CREATE TABLE job_states_new (
    job_id    TEXT NOT NULL,
    peer_id   TEXT NOT NULL,
    state     TEXT NOT NULL,
    at        INTEGER NOT NULL,
    reason    TEXT NOT NULL DEFAULT '',
    exit_code INTEGER NOT NULL DEFAULT 0,
    output    TEXT NOT NULL DEFAULT '',
    via       TEXT NOT NULL,
    PRIMARY KEY (job_id, peer_id)
) WITHOUT ROWID;
INSERT INTO job_states_new SELECT job_id, peer_id, state, at, reason, exit_code, output, via FROM job_states;
DROP TABLE job_states;
ALTER TABLE job_states_new RENAME TO job_states;

CREATE TABLE job_history (
    id      INTEGER PRIMARY KEY,
    job_id  TEXT NOT NULL,
    peer_id TEXT NOT NULL,
    state   TEXT NOT NULL,
    at      INTEGER NOT NULL
);
INSERT INTO job_history(job_id, peer_id, state, at) SELECT job_id, peer_id, state, at FROM job_events ORDER BY at;
DROP TABLE job_events;
CREATE INDEX job_history_by_job ON job_history(job_id);
